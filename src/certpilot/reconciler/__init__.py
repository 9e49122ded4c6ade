"""The renewal loop: gather -> decide (policy) -> act -> record, one certificate at a time."""
