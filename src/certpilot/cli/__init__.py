"""The `certpilot` command line: parses input, calls services, prints results."""
