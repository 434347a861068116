"""Fixtures of the model tier's tests (``pzone_model``): none beyond tests/conftest.py's yet; one that two modules here
need goes here."""
