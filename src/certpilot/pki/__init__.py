"""X.509 work with pyca/cryptography: CSRs, checks on issued certificates, encodings."""
