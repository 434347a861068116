"""Object keys and the argument checks both backends share, so that a key or limit valid on one is valid on both.

Also :class:`_LimitedReader`, through which both backends read a ``put_stream`` so that ``max_bytes`` is enforced
the same way while the bytes stream in.
"""

from __future__ import annotations

import re

from pzone.storage.protocol import ObjectTooLarge, Readable

MAX_KEY_LENGTH = 512
MAX_SEGMENT_LENGTH = 255
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600  # S3's own limit for SigV4 presigned URLs
CHUNK_SIZE = 1024 * 1024

_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_KEY_CHARS_RE = re.compile(r"[A-Za-z0-9._/-]*")
# type/subtype with optional parameters; printable ASCII only (no CR/LF: it ends up in headers and signatures).
_CONTENT_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(;[ -~]*)?")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_EXT_RE = re.compile(r"[a-z0-9]{1,10}")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise ValueError saying why.

    Keys are relative paths of ``/``-separated segments; each segment starts with a letter or digit and has only
    letters, digits, ``. _ -``. So: no absolute paths, no ``.``/``..`` segments, no backslashes, no empty segments
    (``//``, leading or trailing ``/``), no hidden names (the local backend keeps its temp files and metadata under
    dot-names), no spaces or control characters, at most 512 characters (255 per segment).
    """
    if not isinstance(key, str):
        raise ValueError(f"object key must be a string, not {type(key).__name__}")
    if not key:
        raise ValueError("object key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"object key is longer than {MAX_KEY_LENGTH} characters ({len(key)})")
    if "\\" in key:
        raise ValueError(f"object key {key!r} contains a backslash")
    if key.startswith("/"):
        raise ValueError(f"object key {key!r} is absolute (starts with '/')")
    if not _KEY_CHARS_RE.fullmatch(key):
        bad = sorted({c for c in key if not _KEY_CHARS_RE.fullmatch(c)})
        raise ValueError(
            f"object key {key!r} has characters outside letters, digits and '/._-': {''.join(bad)!r}"
        )
    for segment in key.split("/"):
        if not segment:
            raise ValueError(f"object key {key!r} has an empty segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise ValueError(f"object key {key!r} has a {segment!r} segment")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise ValueError(f"object key {key!r} has a segment longer than {MAX_SEGMENT_LENGTH} characters")
        if not _SEGMENT_RE.fullmatch(segment):
            raise ValueError(f"object key {key!r}: segment {segment!r} must start with a letter or digit")
    return key


def content_addressed_key(prefix: str, sha256_hex: str, ext: str) -> str:
    """``originals/ab/abcd….jpg``: the prefix, the first two hex digits as a fan-out folder, the digest, the extension."""
    digest = sha256_hex.lower()
    if not _SHA256_RE.fullmatch(digest):
        raise ValueError(f"not a SHA-256 hex digest: {sha256_hex!r}")
    extension = ext.removeprefix(".").lower()
    if not _EXT_RE.fullmatch(extension):
        raise ValueError(f"extension must be 1-10 letters or digits: {ext!r}")
    base = prefix.strip("/")
    key = f"{base}/{digest[:2]}/{digest}.{extension}" if base else f"{digest[:2]}/{digest}.{extension}"
    return validate_key(key)


def validate_content_type(content_type: str) -> str:
    if (
        not isinstance(content_type, str)
        or len(content_type) > 255
        or not _CONTENT_TYPE_RE.fullmatch(content_type)
    ):
        raise ValueError(f"not a valid content type: {content_type!r} (expected 'type/subtype')")
    return content_type


def _check_max_bytes(max_bytes: int | None) -> None:
    if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes < 0):
        raise ValueError(f"max_bytes must be a non-negative integer, not {max_bytes!r}")


def _check_expires(expires_s: int) -> None:
    if (
        isinstance(expires_s, bool)
        or not isinstance(expires_s, int)
        or not 0 < expires_s <= MAX_PRESIGN_EXPIRES_S
    ):
        raise ValueError(f"expires_s must be an integer from 1 to {MAX_PRESIGN_EXPIRES_S}, not {expires_s!r}")


class _LimitedReader:
    """Counts what passes through and raises ObjectTooLarge as soon as more than ``max_bytes`` were read.

    Deliberately not seekable, so that s3transfer reads through it rather than around it.
    """

    def __init__(self, key: str, fileobj: Readable, max_bytes: int | None) -> None:
        self._key = key
        self._fileobj = fileobj
        self._max_bytes = max_bytes
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        """Exactly ``size`` bytes unless the stream ends first (``b""`` only at its end), like a buffered file.

        Sockets and request bodies may return fewer bytes than asked for; s3transfer takes a short read for the
        end of the stream and would store a truncated object, so short reads are filled up here.
        """
        if size is None or size < 0:
            # Read to the end, but never past one byte over the limit: that is enough to know.
            size = (self._max_bytes - self.count + 1) if self._max_bytes is not None else -1
        parts: list[bytes] = []
        got = 0
        while size < 0 or got < size:
            data = self._fileobj.read(CHUNK_SIZE if size < 0 else size - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
            self.count += len(data)
            if self._max_bytes is not None and self.count > self._max_bytes:
                raise ObjectTooLarge(self._key, self._max_bytes)
        return b"".join(parts)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False
