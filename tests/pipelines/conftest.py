"""Fixtures of the data pipeline's tests (``pzone_pipelines``: the stages, `dvc repro`, the DVC remote,
`pzone retrain`): none beyond tests/conftest.py's yet; one that two modules here need goes here."""
