"""The object store the settings ask for (S3 or the local folder), and the local store's signing key."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from typing import TYPE_CHECKING

from pzone.storage.local import LocalObjectStore
from pzone.storage.protocol import ObjectStore
from pzone.storage.s3 import S3ObjectStore

if TYPE_CHECKING:
    from pzone.settings import CoreSettings


def local_signing_key(settings: CoreSettings) -> bytes:
    """``PZONE_SECRET_KEY``, or a random key generated once into ``data_dir/secret_key`` (mode 0600)."""
    if settings.secret_key is not None:
        value = settings.secret_key.get_secret_value().encode()
        if len(value) < 16:
            raise ValueError("PZONE_SECRET_KEY must be at least 16 characters")
        return value
    path = settings.data_dir / "secret_key"
    try:
        existing = path.read_bytes().strip()
    except FileNotFoundError:
        existing = b""
    if existing:
        return existing
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Written in full to a private temp file, then linked into place: a concurrent first start either wins or
    # reads the winner's key, and no one ever reads a half-written key.
    fd, tmp_name = tempfile.mkstemp(prefix=".secret_key-", dir=settings.data_dir)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_hex(32).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp_name, path)
    finally:
        os.unlink(tmp_name)
    key = path.read_bytes().strip()
    if not key:
        raise ValueError(f"{path} is empty: delete it to generate a new key, or set PZONE_SECRET_KEY")
    return key


def object_store_from_settings(settings: CoreSettings) -> ObjectStore:
    """S3 when ``PZONE_S3_BUCKET`` is set, else the folder ``data_dir/objects``."""
    if settings.s3_bucket:
        return S3ObjectStore(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            public_endpoint_url=settings.s3_public_endpoint_url,
            max_attempts=settings.s3_max_attempts,
        )
    return LocalObjectStore(settings.data_dir / "objects", local_signing_key(settings))
