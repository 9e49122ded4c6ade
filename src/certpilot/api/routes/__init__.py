"""API routes: parse, call a service, shape the answer. No logic of their own."""
