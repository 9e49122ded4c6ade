"""certpilot: obtains CA-signed certificates through issuer scripts and keeps them renewed."""

__version__ = "0.1.0"
