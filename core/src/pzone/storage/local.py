"""The local-folder object store: objects as plain files under a root, with its own HMAC-signed URLs.

The embedded default (``$PZONE_DATA_DIR/objects``). Its short-lived URLs (``/api/objects/<key>?...``) are signed
with HMAC-SHA256; the API route that serves them checks them with :meth:`LocalObjectStore.verify_signature`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import mimetypes
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from pzone.storage.keys import (
    CHUNK_SIZE,
    _check_expires,
    _check_max_bytes,
    _LimitedReader,
    validate_content_type,
    validate_key,
)
from pzone.storage.protocol import (
    DEFAULT_CONTENT_TYPE,
    InvalidSignature,
    ListedObject,
    ObjectInfo,
    ObjectNotFound,
    ObjectStream,
    PresignedGrant,
    Readable,
)


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

    def list_objects(self, prefix: str) -> Iterator[ListedObject]:
        # The folder that holds every key with this prefix: its name up to the last "/".
        folder = self.root / prefix.rpartition("/")[0]
        if not folder.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(folder):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d != self.META_DIR]
            for name in filenames:
                if name.startswith(".tmp-"):  # a write in progress, not an object yet
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:  # deleted meanwhile
                    continue
                yield ListedObject(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

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

    def presign_put(
        self, key: str, content_type: str, *, max_bytes: int, expires_s: int = 900, exact: bool = False
    ) -> str:
        """``/api/objects/<key>?method=PUT&expires=…&ct=…&max=…&sig=…``; the route enforces ``max`` while reading
        (``exact`` changes nothing here: a shorter body is refused by the completion's checks, not by the URL)."""
        del exact
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
