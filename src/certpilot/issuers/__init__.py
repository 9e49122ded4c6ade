"""Running issuer scripts: the worker process, the pool that drives it, output capture."""
