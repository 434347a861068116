"""Fixtures of the deployment's tests (Kubernetes, the container images, nginx, the workflows, the AWS template
and the Lambda zip): none beyond tests/conftest.py's yet; one that two modules here need goes here."""
