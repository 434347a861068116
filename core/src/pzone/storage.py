"""Object store: photos and other blobs, on S3 or in a local folder, with the same semantics.

Two backends implement :class:`ObjectStore`:

* :class:`LocalObjectStore` keeps each object as a plain file under a root folder (the embedded default,
  ``$PZONE_DATA_DIR/objects``) and signs its own short-lived URLs (``/api/objects/<key>?...``) with HMAC-SHA256;
  the API route that serves those URLs checks them with :meth:`LocalObjectStore.verify_signature`.
* :class:`S3ObjectStore` talks to S3 (or anything speaking its API) through boto3; its presigned URLs are S3's own.

Shared semantics:

* Keys are validated strictly by :func:`validate_key` in both backends (``ValueError`` on a bad key), so a key that
  works on one works on the other.
* A missing object raises :class:`ObjectNotFound` (a ``KeyError``) from ``get_bytes`` and ``open``; ``head`` returns
  ``None``; ``delete`` of a missing object does nothing.
* ``put_stream`` reads the file object in chunks and, past ``max_bytes``, aborts with :class:`ObjectTooLarge` and
  leaves no object behind (no partial file, no half-finished multipart upload).
* A write replaces the whole object or nothing: readers never see a half-written object.

Upload size limits and presigned PUTs: the local URL carries its ``max`` and the serving route enforces it while
streaming. An S3 presigned PUT URL cannot carry a maximum size (S3 only enforces an exact ``Content-Length``, and only
``POST`` policies have ``content-length-range``); we keep the PUT URL, which a browser can use with a plain
``fetch(url, {method: "PUT", body: file, headers: {"Content-Type": type}})``, and the size is re-checked when the
client reports the upload complete: call :func:`check_uploaded_object`, which deletes an object that is too large.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import mimetypes
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

if TYPE_CHECKING:
    from pzone.settings import CoreSettings

MAX_KEY_LENGTH = 512
MAX_SEGMENT_LENGTH = 255
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600  # S3's own limit for SigV4 presigned URLs
DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_SIZE = 1024 * 1024

_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_KEY_CHARS_RE = re.compile(r"[A-Za-z0-9._/-]*")
# type/subtype with optional parameters; printable ASCII only (no CR/LF: it ends up in headers and signatures).
_CONTENT_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(;[ -~]*)?")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_EXT_RE = re.compile(r"[a-z0-9]{1,10}")


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


class InvalidSignature(PermissionError):
    """A local presigned URL was refused: tampered with, expired, or used with another method or content type."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str


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

    def presign_put(self, key: str, content_type: str, *, max_bytes: int, expires_s: int = 900) -> str:
        """A URL to PUT the object with header ``Content-Type: content_type`` until ``expires_s`` from now."""
        ...

    def presign_get(self, key: str, expires_s: int = 900) -> str:
        """A URL to GET the object until ``expires_s`` from now."""
        ...


# ---------------------------------------------------------------------------------------------------------------
# Keys and arguments


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


# ---------------------------------------------------------------------------------------------------------------
# Local folder


class LocalObjectStore:
    """Objects as files under ``root`` (``root/<key>``), content types in ``root/.meta/<key>.json``.

    Writes go to a temp file in the target folder, are fsynced, then renamed over the target (``os.replace``), so
    an object is either the old one or the new one, never half of either. Presigned URLs are paths under
    ``url_prefix`` signed with HMAC-SHA256 under ``signing_key``.
    """

    META_DIR = ".meta"

    def __init__(self, root: Path, signing_key: bytes, *, url_prefix: str = "/api/objects") -> None:
        if len(signing_key) < 16:
            raise ValueError("the signing key must be at least 16 bytes")
        self.root = Path(root)
        self._signing_key = bytes(signing_key)
        self.url_prefix = url_prefix.rstrip("/")

    def __repr__(self) -> str:
        return f"LocalObjectStore(root={str(self.root)!r})"

    # paths

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.root / self.META_DIR / f"{validate_key(key)}.json"

    # writing

    def _write_temp(self, key: str, target: Path, chunks: Iterator[bytes]) -> tuple[str, int]:
        """Write ``chunks`` to a fsynced temp file beside ``target``; return its name and size (removed on failure)."""
        for attempt in range(3):  # a concurrent delete may prune the folder between mkdir and mkstemp
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
            except (FileExistsError, NotADirectoryError) as exc:
                raise ValueError(f"object key {key!r}: a folder on its path is already an object") from exc
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, 0o644)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return tmp_name, size

    def _write_object(self, key: str, chunks: Iterator[bytes], content_type: str) -> int:
        """Data to a temp file, metadata to another, then both renamed into place (metadata first).

        Any failure before the renames (a read error, ObjectTooLarge, a full disk) removes the temp files and leaves
        the old object, if any, as it was.
        """
        validate_content_type(content_type)
        path, meta_path = self._path(key), self._meta_path(key)
        if path.is_dir():
            raise ValueError(f"object key {key!r} is a folder of other objects")
        try:
            tmp_data, size = self._write_temp(key, path, chunks)
        except BaseException:
            self._prune(path.parent)
            raise
        tmp_meta: str | None = None
        try:
            meta = json.dumps({"content_type": content_type}).encode()
            tmp_meta, _ = self._write_temp(key, meta_path, iter([meta]))
            os.replace(tmp_meta, meta_path)
            tmp_meta = None
            try:
                os.replace(tmp_data, path)
            except IsADirectoryError as exc:
                raise ValueError(f"object key {key!r} is a folder of other objects") from exc
        except BaseException:
            for leftover in (tmp_data, tmp_meta):
                if leftover is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(leftover)
            self._prune(path.parent)  # folders made for this write only
            self._prune(meta_path.parent)
            raise
        _fsync_dir(meta_path.parent)
        _fsync_dir(path.parent)
        return size

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        self._write_object(key, iter([bytes(data)]), content_type)

    def put_stream(
        self,
        key: str,
        fileobj: Readable,
        content_type: str = DEFAULT_CONTENT_TYPE,
        max_bytes: int | None = None,
    ) -> int:
        _check_max_bytes(max_bytes)
        reader = _LimitedReader(key, fileobj, max_bytes)

        def chunks() -> Iterator[bytes]:
            while chunk := reader.read(CHUNK_SIZE):
                yield chunk

        return self._write_object(key, chunks(), content_type)

    # reading

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[ObjectStream]:
        path = self._path(key)
        try:
            stream = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        with stream:
            yield stream

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):  # a folder of other objects
            return None
        return ObjectInfo(size=st.st_size, content_type=self._content_type(key))

    def _content_type(self, key: str) -> str:
        try:
            meta = json.loads(self._meta_path(key).read_bytes())
            return str(meta["content_type"])
        except (OSError, ValueError, KeyError, TypeError):
            # Files put in place by hand have no metadata: guess from the name, as a static file server would.
            guessed, _ = mimetypes.guess_type(key)
            return guessed or DEFAULT_CONTENT_TYPE

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def copy(self, source_key: str, target_key: str, content_type: str) -> None:
        validate_content_type(content_type)
        with self.open(source_key) as source:
            self._write_object(target_key, iter(lambda: source.read(CHUNK_SIZE), b""), content_type)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            return  # a "folder" of other objects is no object
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()
        meta = self._meta_path(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            meta.unlink()
        self._prune(path.parent)
        self._prune(meta.parent)

    def _prune(self, folder: Path) -> None:
        """Remove folders left empty by a delete, up to the root (so that the key can become an object again)."""
        stop = {self.root.resolve(), (self.root / self.META_DIR).resolve()}
        while folder.resolve() not in stop and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty, or already gone
                return
            folder = folder.parent

    # presigned URLs

    def _sign(self, key: str, method: str, expires: int, content_type: str, max_bytes: str) -> str:
        message = "\n".join(["pzone-object-url-v1", method, key, str(expires), content_type, max_bytes])
        return hmac.new(self._signing_key, message.encode(), hashlib.sha256).hexdigest()

    def _url(self, key: str, params: dict[str, str]) -> str:
        return f"{self.url_prefix}/{quote(key, safe='/')}?{urlencode(params)}"

    def presign_put(self, key: str, content_type: str, *, max_bytes: int, expires_s: int = 900) -> str:
        """``/api/objects/<key>?method=PUT&expires=…&ct=…&max=…&sig=…``; the route enforces ``max`` while reading."""
        validate_key(key)
        validate_content_type(content_type)
        _check_max_bytes(max_bytes)
        _check_expires(expires_s)
        expires = math.ceil(time.time() + expires_s)
        sig = self._sign(key, "PUT", expires, content_type, str(max_bytes))
        params = {
            "method": "PUT",
            "expires": str(expires),
            "ct": content_type,
            "max": str(max_bytes),
            "sig": sig,
        }
        return self._url(key, params)

    def presign_get(self, key: str, expires_s: int = 900) -> str:
        """``/api/objects/<key>?method=GET&expires=…&sig=…``."""
        validate_key(key)
        _check_expires(expires_s)
        expires = math.ceil(time.time() + expires_s)
        sig = self._sign(key, "GET", expires, "", "")
        return self._url(key, {"method": "GET", "expires": str(expires), "sig": sig})

    def verify_signature(
        self,
        key: str,
        query: Mapping[str, str],
        *,
        method: str,
        content_type: str | None = None,
        now: float | None = None,
    ) -> PresignedGrant:
        """Check a request for ``/api/objects/<key>`` against the URL's query parameters.

        ``method`` is the request's HTTP method and ``content_type`` its ``Content-Type`` header (PUT). Raises
        InvalidSignature when any signed field was changed, the URL has expired, the method is not the one signed
        (HEAD is allowed where GET was), or a PUT's content type differs from the signed one. Returns the grant, whose
        ``max_bytes`` the route must enforce while it reads the body.
        """
        try:
            validate_key(key)
        except ValueError as exc:
            raise InvalidSignature(f"bad object key: {exc}") from None
        signed_method = query.get("method", "")
        if signed_method not in ("GET", "PUT"):
            raise InvalidSignature("the URL names no method (GET or PUT)")
        expires = _parse_uint(query.get("expires"), "expires")
        sig = query.get("sig", "")
        if signed_method == "PUT":
            signed_ct = query.get("ct", "")
            max_text = query.get("max", "")
            max_bytes: int | None = _parse_uint(max_text, "max")
        else:
            signed_ct, max_text, max_bytes = "", "", None
        expected = self._sign(key, signed_method, expires, signed_ct, max_text)
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
            raise InvalidSignature("the URL's signature does not match (wrong key, or a field was changed)")
        if (time.time() if now is None else now) > expires:
            raise InvalidSignature("the URL has expired")
        request_method = method.upper()
        if not (request_method == signed_method or (signed_method == "GET" and request_method == "HEAD")):
            raise InvalidSignature(f"the URL allows {signed_method}, not {request_method}")
        if signed_method == "PUT" and (content_type or "").strip() != signed_ct:
            raise InvalidSignature(f"the URL allows Content-Type {signed_ct!r}, not {content_type!r}")
        return PresignedGrant(
            key=key,
            method=signed_method,
            expires=expires,
            content_type=signed_ct or None,
            max_bytes=max_bytes,
        )

    def verify_url(
        self, url: str, *, method: str, content_type: str | None = None, now: float | None = None
    ) -> PresignedGrant:
        """:meth:`verify_signature` for a whole URL or path as :meth:`presign_put`/:meth:`presign_get` made it."""
        parts = urlsplit(url)
        prefix = f"{self.url_prefix}/"
        if not parts.path.startswith(prefix):
            raise InvalidSignature(f"not an object URL (expected a path under {prefix})")
        key = unquote(parts.path[len(prefix) :])
        # Repeated parameters are refused rather than silently resolved one way or the other.
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = dict(pairs)
        if len(query) != len(pairs):
            raise InvalidSignature("the URL repeats a query parameter")
        return self.verify_signature(key, query, method=method, content_type=content_type, now=now)


def _parse_uint(text: str | None, name: str) -> int:
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 20:
        raise InvalidSignature(f"the URL's {name!r} is missing or not a number")
    return int(text)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: some filesystems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# S3


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


_PROBE_KEY = "pzone-presign-probe"


class _Presigner:
    """Presigned S3 URLs signed by botocore's own ``S3SigV4QueryAuth``, with the endpoint and region resolved once.

    ``generate_presigned_url`` resolves the endpoint ruleset and runs the client's event hooks on every call
    (~0.2 ms alone, ~0.7 ms inside a busy API process, three per upload and two per photo of a history page).
    The URL of an object differs from another's only in its path, so the first presign (botocore's, for a probe
    key) gives the base URL (virtual-hosted or path style, the public endpoint) and the signing region and
    service; each URL after it is one SigV4 query signature with the session's current credentials (refreshed by
    botocore when they are temporary: instance, task or IRSA roles). The URLs are botocore's, byte for byte
    (``tests/test_storage.py`` compares both at one instant).
    """

    def __init__(self, client: Any, bucket: str, session: Any) -> None:
        self._client, self._bucket, self._session = client, bucket, session
        self._lock = threading.Lock()
        self._resolved: tuple[str, str, str] | None = None  # base URL, region, service

    def _resolve(self) -> tuple[str, str, str]:
        with self._lock:
            if self._resolved is None:
                probe = urlsplit(
                    self._client.generate_presigned_url(
                        "get_object", Params={"Bucket": self._bucket, "Key": _PROBE_KEY}, ExpiresIn=60
                    )
                )
                if not probe.path.endswith("/" + _PROBE_KEY):
                    raise RuntimeError(f"unexpected presigned URL layout: {probe.path!r}")
                scope = dict(parse_qsl(probe.query))["X-Amz-Credential"].split(
                    "/"
                )  # key/date/region/service/..
                base = f"{probe.scheme}://{probe.netloc}{probe.path[: -len(_PROBE_KEY)]}"
                self._resolved = (base, scope[2], scope[3])
            return self._resolved

    def sign(self, method: str, key: str, expires_s: int, content_type: str | None = None) -> str:
        from botocore.auth import S3SigV4QueryAuth
        from botocore.awsrequest import AWSRequest

        base, region, service = self._resolved or self._resolve()
        credentials = self._session.get_credentials()
        if credentials is None:  # as botocore's own presigning says it
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        headers = {"Content-Type": content_type} if content_type is not None else {}
        request = AWSRequest(method=method, url=base + quote(key, safe="/~"), headers=headers)
        S3SigV4QueryAuth(credentials.get_frozen_credentials(), service, region, expires=expires_s).add_auth(
            request
        )
        return str(request.url)


class S3ObjectStore:
    """Objects in an S3 bucket through boto3.

    Credentials come from boto3's usual chain (environment, shared config, instance or task role), never from our
    settings. The bucket must exist; :meth:`ensure_bucket` creates it when asked to (tests, a fresh local setup).
    ``put_stream`` uses boto3's managed transfer: one PUT for small objects, a multipart upload past
    ``multipart_threshold`` (aborted, so nothing is left, when the stream fails or passes ``max_bytes``).
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        multipart_threshold: int = 8 * 1024 * 1024,
        public_endpoint_url: str | None = None,
    ) -> None:
        import boto3  # imported here: the local backend and the settings must not need it to import
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        if not bucket:
            raise ValueError("an S3 bucket name is required")
        self.bucket = bucket
        self.region = region
        if client is None:
            config = Config(
                signature_version="s3v4",
                # Custom endpoints (MinIO, moto, Ceph…) rarely have per-bucket DNS names.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                retries={"mode": "standard", "max_attempts": 5},
            )
            session = boto3.session.Session()
            client = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        else:
            session = None  # a client handed in: its credentials are its own, so botocore presigns
        self.client = client
        # Presigned URLs are for browsers: where the servers reach S3 by an internal name (a Service, a compose
        # service), they are signed for the public address instead (SigV4 signs the host); nothing is sent.
        self.presign_client = client
        if public_endpoint_url and public_endpoint_url != endpoint_url:
            public_config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 5},
            )
            self.presign_client = (session or boto3).client(
                "s3", endpoint_url=public_endpoint_url, region_name=region, config=public_config
            )
        self._presigner = _Presigner(self.presign_client, bucket, session) if session is not None else None
        self._transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold, 5 * 1024 * 1024),
        )

    def __repr__(self) -> str:
        return f"S3ObjectStore(bucket={self.bucket!r})"

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (only ever called explicitly, never on construction)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
        params: dict[str, Any] = {"Bucket": self.bucket}
        region = self.region or self.client.meta.region_name
        if region and region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**params)
        except Exception as exc:
            if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        validate_key(key)
        validate_content_type(content_type)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data), ContentType=content_type)

    def put_stream(
        self,
        key: str,
        fileobj: Readable,
        content_type: str = DEFAULT_CONTENT_TYPE,
        max_bytes: int | None = None,
    ) -> int:
        validate_key(key)
        validate_content_type(content_type)
        _check_max_bytes(max_bytes)
        reader = _LimitedReader(key, fileobj, max_bytes)
        self.client.upload_fileobj(
            reader,
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type},
            Config=self._transfer_config,
        )
        return reader.count

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[ObjectStream]:
        validate_key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(key) from None
            raise
        body = response["Body"]
        try:
            yield body
        finally:
            body.close()

    def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(
            size=int(response["ContentLength"]),
            content_type=str(response.get("ContentType") or DEFAULT_CONTENT_TYPE),
        )

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def delete(self, key: str) -> None:
        validate_key(key)
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def copy(self, source_key: str, target_key: str, content_type: str) -> None:
        validate_key(source_key)
        validate_key(target_key)
        validate_content_type(content_type)
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=target_key,
                CopySource={"Bucket": self.bucket, "Key": source_key},
                ContentType=content_type,
                MetadataDirective="REPLACE",
            )
        except Exception as exc:  # botocore ClientError; botocore is imported lazily
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(source_key) from None
            raise

    def presign_put(self, key: str, content_type: str, *, max_bytes: int, expires_s: int = 900) -> str:
        """An S3 SigV4 presigned PUT URL; ``Content-Type`` is a signed header, so the client must send exactly it.

        ``max_bytes`` cannot be put into a presigned PUT: re-check the size on completion with
        :func:`check_uploaded_object`.
        """
        validate_key(key)
        validate_content_type(content_type)
        _check_max_bytes(max_bytes)
        _check_expires(expires_s)
        if self._presigner is not None:
            return self._presigner.sign("PUT", key, expires_s, content_type)
        return str(
            self.presign_client.generate_presigned_url(
                "put_object",
                Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
                ExpiresIn=expires_s,
                HttpMethod="PUT",
            )
        )

    def presign_get(self, key: str, expires_s: int = 900) -> str:
        validate_key(key)
        _check_expires(expires_s)
        if self._presigner is not None:
            return self._presigner.sign("GET", key, expires_s)
        return str(
            self.presign_client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=expires_s,
                HttpMethod="GET",
            )
        )


# ---------------------------------------------------------------------------------------------------------------
# Helpers


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


def object_store_from_settings(settings: CoreSettings) -> LocalObjectStore | S3ObjectStore:
    """S3 when ``PZONE_S3_BUCKET`` is set, else the folder ``data_dir/objects``."""
    if settings.s3_bucket:
        return S3ObjectStore(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            public_endpoint_url=settings.s3_public_endpoint_url,
        )
    return LocalObjectStore(settings.data_dir / "objects", local_signing_key(settings))
