"""Fixtures of the local stack's tests (``pzone_stack``: `pzone up`, `pzone demo`, `pzone simulate`, the photo
simulator): none beyond tests/conftest.py's yet; one that two modules here need goes here."""
