"""Key backends and the sealing of secrets at rest."""
