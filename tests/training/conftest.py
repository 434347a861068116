"""Fixtures of training's tests (``pzone_training``): none beyond tests/conftest.py's yet; one that two modules
here need goes here."""
