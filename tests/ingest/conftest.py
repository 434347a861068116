"""Fixtures of the ingest's tests (``pzone_ingest``: the batch step, the MQTT worker, the Lambda): none beyond
tests/conftest.py's yet; one that two modules here need goes here."""
