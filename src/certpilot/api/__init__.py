"""The HTTP edge: FastAPI application over the services."""
