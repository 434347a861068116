"""Fixtures of the tests of the benchmarks' helpers (``benchmarks/``): none beyond tests/conftest.py's yet;
one that two modules here need goes here."""
