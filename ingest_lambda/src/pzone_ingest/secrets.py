"""Database credentials from AWS Secrets Manager, for the Lambda (``PZONE_DATABASE_SECRET_ARN``).

The secret is the JSON that RDS and Secrets Manager's rotation templates write: ``username``, ``password``,
``host``, optional ``port`` (default 5432) and ``dbname`` (default ``postgres``), ``engine`` ``postgres``.
It is read once per Lambda container; a rotated password takes effect at the next cold start, or at once when a
connection fails to authenticate (the handler then drops its cached engine, see ``handler._runtime``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

_ENGINES = {"postgres", "postgresql", "aurora-postgresql"}


class SecretError(ValueError):
    """The secret is missing, unreadable or not a usable database secret (the message never holds its value)."""


def database_url_from_secret(secret: str) -> str:
    """A SQLAlchemy URL from the secret's JSON string; raises :class:`SecretError` naming what is wrong."""
    try:
        fields = json.loads(secret)
    except (TypeError, ValueError):
        raise SecretError("the database secret is not JSON") from None
    if not isinstance(fields, dict):
        raise SecretError("the database secret is not a JSON object")
    missing = [name for name in ("username", "password", "host") if not fields.get(name)]
    if missing:
        raise SecretError(f"the database secret lacks {', '.join(missing)}")
    engine = str(fields.get("engine") or "postgres")
    if engine not in _ENGINES:
        raise SecretError(f"the database secret is for engine {engine!r}; P-ZONE needs PostgreSQL")
    try:
        port = int(fields.get("port") or 5432)
    except (TypeError, ValueError):
        raise SecretError("the database secret's port is not a number") from None
    if not 0 < port < 65536:
        raise SecretError("the database secret's port is out of range")
    user, password = quote(str(fields["username"]), safe=""), quote(str(fields["password"]), safe="")
    dbname = quote(str(fields.get("dbname") or "postgres"), safe="")
    return f"postgresql+psycopg://{user}:{password}@{fields['host']}:{port}/{dbname}?sslmode=prefer"


def fetch_database_url(secret_arn: str, client: Any | None = None) -> str:
    """Read the secret (``secretsmanager:GetSecretValue``) and turn it into a URL."""
    if client is None:
        import boto3  # in the Lambda runtime and in pzone-core's base install

        client = boto3.client("secretsmanager")
    try:
        answer = client.get_secret_value(SecretId=secret_arn)
    except Exception as exc:  # botocore's ClientError and connection errors alike
        raise SecretError(f"cannot read the database secret {secret_arn}: {type(exc).__name__}") from exc
    secret = answer.get("SecretString")
    if secret is None:
        raise SecretError("the database secret has no SecretString (binary secrets are not supported)")
    return database_url_from_secret(secret)
