"""What every object store does: the ``ObjectStore`` protocol, its errors and values, and the upload re-check.

Both backends (:mod:`pzone.storage.local`, :mod:`pzone.storage.s3`) keep these semantics, so a caller typed with
:class:`ObjectStore` works on either:

* Keys are validated strictly by :func:`~pzone.storage.keys.validate_key` in both backends (``ValueError`` on a bad
  key), so a key that works on one works on the other.
* A missing object raises :class:`ObjectNotFound` (a ``KeyError``) from ``get_bytes`` and ``open``; ``head`` returns
  ``None``; ``delete`` of a missing object does nothing.
* ``put_stream`` reads the file object in chunks and, past ``max_bytes``, aborts with :class:`ObjectTooLarge` and
  leaves no object behind (no partial file, no half-finished multipart upload).
* A write replaces the whole object or nothing: readers never see a half-written object.

Upload size limits and presigned PUTs: the local URL carries its ``max`` and the serving route enforces it while
streaming. An S3 presigned PUT URL cannot carry a maximum (only ``POST`` policies have ``content-length-range``), but
it can sign an exact ``Content-Length``: with ``exact=True`` S3 refuses a PUT of any other length than
``max_bytes``, before it stores a byte. A browser's plain ``fetch(url, {method: "PUT", body: file, headers:
{"Content-Type": type}})`` sends the file's length itself, so the client declares its size first. Either way the size
is re-checked when the client reports the upload complete: call :func:`check_uploaded_object`, which deletes an
object that is too large.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

DEFAULT_CONTENT_TYPE = "application/octet-stream"


class ObjectNotFound(KeyError):
    """The object does not exist (raised by ``get_bytes`` and ``open`` in every backend)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:  # KeyError's own __str__ would show the repr of the argument
        return f"no object with key {self.key!r}"


class ObjectTooLarge(ValueError):
    """More than ``max_bytes`` were offered; nothing was stored."""

    def __init__(self, key: str, max_bytes: int, size: int | None = None) -> None:
        detail = f" ({size} bytes)" if size is not None else ""
        super().__init__(f"object {key!r} is larger than the limit of {max_bytes} bytes{detail}")
        self.key = key
        self.max_bytes = max_bytes
        self.size = size


class ObjectStoreUnavailable(ConnectionError):
    """The store could not be reached, or answered with its own server error, after the backend's retries. The
    call's effect is unknown to the caller only in that a lost answer may hide a completed write; a caller that
    records nothing before the store answered has half-written nothing, and may try again later."""


class InvalidSignature(PermissionError):
    """A local presigned URL was refused: tampered with, expired, or used with another method or content type."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str


@dataclass(frozen=True)
class ListedObject:
    """One object of a listing: its key, size and when it was last written (UTC)."""

    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class PresignedGrant:
    """What a verified local presigned URL allows: ``method`` on ``key``; for PUT, the content type and size limit."""

    key: str
    method: str
    expires: int
    content_type: str | None = None
    max_bytes: int | None = None


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ObjectStream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@runtime_checkable
class ObjectStore(Protocol):
    """What callers may use of a store; both backends match it structurally, without inheriting from it.

    ``tests/core/test_storage.py`` checks that each backend has every method here with the same signature, and that a
    method both backends have is declared here.
    """

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        """Store ``data`` under ``key`` (replacing any object there)."""
        ...

    def put_stream(
        self,
        key: str,
        fileobj: Readable,
        content_type: str = DEFAULT_CONTENT_TYPE,
        max_bytes: int | None = None,
    ) -> int:
        """Store what ``fileobj`` yields, read in chunks; return the size. Past ``max_bytes``: ObjectTooLarge."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object; ObjectNotFound if missing."""
        ...

    def open(self, key: str) -> contextlib.AbstractContextManager[ObjectStream]:
        """The object as a stream to ``read(n)`` from, closed on leaving the ``with``; ObjectNotFound if missing."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Size and content type, or None if missing."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens if it is missing."""
        ...

    def copy(self, source_key: str, target_key: str, content_type: str) -> None:
        """Copy an object inside the store (server-side on S3: the bytes do not pass through this process)."""
        ...

    def list_objects(self, prefix: str) -> Iterator[ListedObject]:
        """Every object whose key starts with ``prefix``, in no promised order (read page by page on S3)."""
        ...

    def presign_put(
        self, key: str, content_type: str, *, max_bytes: int, expires_s: int = 900, exact: bool = False
    ) -> str:
        """A URL to PUT the object with header ``Content-Type: content_type`` until ``expires_s`` from now: at most
        ``max_bytes`` (local), or, with ``exact``, exactly ``max_bytes`` (S3 signs the length; the local route
        refuses more)."""
        ...

    def presign_get(self, key: str, expires_s: int = 900) -> str:
        """A URL to GET the object until ``expires_s`` from now."""
        ...


def check_uploaded_object(
    store: ObjectStore, key: str, *, max_bytes: int, content_type: str | None = None
) -> ObjectInfo:
    """After a presigned PUT: the object's info, or an error with the object deleted.

    Raises ObjectNotFound when nothing was uploaded, ObjectTooLarge (after deleting it) when it is larger than
    ``max_bytes``, ValueError (after deleting it) when ``content_type`` is given and differs.
    """
    info = store.head(key)
    if info is None:
        raise ObjectNotFound(key)
    if info.size > max_bytes:
        store.delete(key)
        raise ObjectTooLarge(key, max_bytes, info.size)
    if content_type is not None and info.content_type != content_type:
        store.delete(key)
        raise ValueError(f"object {key!r} has content type {info.content_type!r}, expected {content_type!r}")
    return info
