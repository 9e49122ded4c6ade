"""Domain values and the error tree; imports nothing else of certpilot."""
