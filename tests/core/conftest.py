"""Fixtures of core's tests (``pzone``): none beyond tests/conftest.py's yet; one that two modules here need
goes here."""
