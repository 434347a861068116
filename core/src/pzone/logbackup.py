"""Shipping rotated log files to S3 (``pzone logs backup``): select, upload, verify, then delete the local copy.

Which files are active and which rotated follows :mod:`pzone.logfiles`' names. :func:`backup_logs` sends every
rotated file under the source folder (recursively), older than ``min_age_s`` (a writer or compressor may still be
busy with a younger one), to ``s3://<bucket>/<prefix><host>/<relative path>``:

* the file is opened once; SHA-256 and MD5 are computed in one read; a HEAD of the key says whether S3 has the same
  bytes: same size and the same ``sha256`` user metadata (which every upload stores), or, for objects stored by
  something else without that metadata, same size and a single-part ETag equal to the MD5. Then it is *skipped*.
* otherwise the file is uploaded (the same key, written anew: a changed file replaces the object; keeping old
  versions is the bucket's versioning, not ours): up to ``multipart_threshold`` with one PUT carrying
  ``ChecksumSHA256`` (S3 recomputes it and refuses the PUT when the bytes differ), past it as a multipart upload with
  a SHA-256 per part (checked by S3 per part). The ETag of a multipart object is not an MD5: that is why the
  comparison is the ``sha256`` metadata.
* then it is *verified*: a HEAD must show the local size, the local SHA-256 in the metadata and, for a single PUT,
  S3's own full-object checksum equal to it; and the local file must not have changed (size, mtime) since it was
  hashed. Only a verified file (uploaded now, or found identical in S3) is deleted with ``delete_uploaded``; an
  active file never is. Any error keeps the file and counts a failure.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from pzone.logfiles import LogKind, log_kind
from pzone.storage import validate_key

log = logging.getLogger("pzone.logbackup")

DEFAULT_PREFIX = "logs/"
DEFAULT_MIN_AGE_S = 60.0
DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
CHUNK_SIZE = 1024 * 1024

_MD5_RE = re.compile(r"[0-9a-f]{32}")
# Error codes of S3 and its look-alikes, for messages a person can act on.
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET_CODES = {"NoSuchBucket"}
_DENIED_CODES = {
    "403",
    "Forbidden",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
_REGION_CODES = {
    "301",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
}


# ---------------------------------------------------------------------------------------------------------------
# Selecting (pure)


@dataclass(frozen=True)
class LogFile:
    """A regular file under the source folder: its path relative to it, size and modification time."""

    path: PurePosixPath
    size: int
    mtime: float

    @property
    def kind(self) -> LogKind:
        return log_kind(self.path.name)


@dataclass(frozen=True)
class Selection:
    upload: tuple[LogFile, ...]
    active: tuple[LogFile, ...]  # left alone (uploaded only with include_active; never deleted)
    too_young: tuple[LogFile, ...]
    other: tuple[LogFile, ...]


def select_logs(
    files: Iterable[LogFile], *, now: float, min_age_s: float, include_active: bool = False
) -> Selection:
    """Which files to upload: rotated ones (and active ones with ``include_active``) not modified in ``min_age_s``.

    A file modified in the future (clock skew) counts as too young. Sorted by path.
    """
    upload: list[LogFile] = []
    active: list[LogFile] = []
    too_young: list[LogFile] = []
    other: list[LogFile] = []
    for f in sorted(files, key=lambda f: f.path):
        kind = f.kind
        if kind is LogKind.OTHER:
            other.append(f)
        elif kind is LogKind.ACTIVE and not include_active:
            active.append(f)
        elif not now - f.mtime >= min_age_s:
            too_young.append(f)
        else:
            upload.append(f)
    return Selection(tuple(upload), tuple(active), tuple(too_young), tuple(other))


def normalize_prefix(prefix: str) -> str:
    """``logs`` → ``logs/``; ``""`` stays empty; leading slashes go. ValueError for a prefix no key can start with."""
    stripped = prefix.strip().strip("/")
    if not stripped:
        return ""
    validate_key(stripped)
    return stripped + "/"


def object_key(prefix: str, host: str, path: PurePosixPath) -> str:
    """``<prefix><host>/<relative path>``, checked against the object store's key rules (ValueError)."""
    if not host or "/" in host:
        raise ValueError(f"host label must be one key segment, not {host!r}")
    return validate_key(f"{normalize_prefix(prefix)}{host}/{path.as_posix()}")


def matches_remote(head: Mapping[str, Any] | None, size: int, sha256_hex: str, md5_hex: str) -> bool:
    """Whether the object HEAD describes holds these bytes: size and ``sha256`` metadata, or size and MD5 ETag."""
    if head is None or int(head.get("ContentLength", -1)) != size:
        return False
    metadata = {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}
    if "sha256" in metadata:
        return metadata["sha256"].lower() == sha256_hex
    etag = str(head.get("ETag", "")).strip('"').lower()
    return bool(_MD5_RE.fullmatch(etag)) and etag == md5_hex  # single-part, unencrypted-by-KMS objects only


def verification_problem(
    head: Mapping[str, Any] | None, size: int, sha256_hex: str, *, single_put: bool
) -> str | None:
    """Why the object just uploaded is not verified (None when it is)."""
    if head is None:
        return "the object is missing after the upload"
    remote_size = int(head.get("ContentLength", -1))
    if remote_size != size:
        return f"S3 has {remote_size} bytes, the file {size}"
    metadata = {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}
    if metadata.get("sha256", "").lower() != sha256_hex:
        return f"S3's sha256 metadata {metadata.get('sha256')!r} differs from the file's {sha256_hex}"
    checksum = head.get("ChecksumSHA256")
    if single_put and checksum and "-" not in str(checksum) and checksum != _b64(bytes.fromhex(sha256_hex)):
        return f"S3's SHA-256 checksum {checksum} differs from the file's"
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------------------------------------------
# Errors


class BackupError(Exception):
    """The backup cannot start (bad source, bucket, credentials): nothing was uploaded or deleted."""


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def describe_s3_error(exc: BaseException, bucket: str) -> str:
    """A message a person can act on, for an error of boto3/botocore."""
    from botocore.exceptions import (
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or a role"
        )
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach the S3 endpoint: {exc}"
    code = error_code(exc)
    if code in _NO_BUCKET_CODES or (code in _NOT_FOUND_CODES and _operation(exc) == "HeadBucket"):
        return f"bucket {bucket!r} does not exist (or is not visible with these credentials)"
    if code in _DENIED_CODES:
        return (
            f"access to bucket {bucket!r} denied ({code}): check the credentials and that they allow "
            "s3:ListBucket, s3:GetObject and s3:PutObject there"
        )
    if code in _REGION_CODES:
        return f"bucket {bucket!r} is in another region than the client's ({code}): set PZONE_S3_REGION"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else code}"


def _operation(exc: BaseException) -> str:
    return str(getattr(exc, "operation_name", ""))


def s3_client(endpoint_url: str | None, region: str | None) -> Any:
    """The project's S3 client (same construction as :class:`pzone.storage.S3ObjectStore`)."""
    from pzone.storage import S3ObjectStore

    return S3ObjectStore("unused", endpoint_url=endpoint_url, region=region).client


def check_bucket(client: Any, bucket: str) -> None:
    """BackupError unless the bucket exists and these credentials may see it (HEAD bucket)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not bucket:
        raise BackupError("no bucket: pass --bucket or set PZONE_S3_BUCKET")
    try:
        client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:
        raise BackupError(describe_s3_error(exc, bucket)) from exc


def check_source(source: Path) -> Path:
    if not source.exists():
        raise BackupError(f"log folder {source} does not exist")
    if not source.is_dir():
        raise BackupError(f"{source} is not a folder")
    return source


def default_host_label() -> str:
    return socket.gethostname()


def check_host_label(host: str) -> str:
    try:
        validate_key(host)
    except ValueError as exc:
        raise BackupError(f"host label {host!r} cannot be a key segment ({exc}): pass --host-label") from None
    if "/" in host:
        raise BackupError(f"host label {host!r} must not contain '/'")
    return host


# ---------------------------------------------------------------------------------------------------------------
# Scanning and uploading (I/O)


def scan_logs(source: Path) -> list[LogFile]:
    """Regular files under ``source``, recursively; symbolic links and hidden folders are not followed."""
    found: list[LogFile] = []
    for folder, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # os.walk does not follow linked folders
        base = Path(folder)
        for name in names:
            try:
                st = (base / name).lstat()
            except FileNotFoundError:
                continue  # rotated or deleted meanwhile
            if not stat.S_ISREG(st.st_mode):
                continue
            relative = PurePosixPath((base / name).relative_to(source).as_posix())
            found.append(LogFile(relative, st.st_size, st.st_mtime))
    return found


class Outcome(StrEnum):
    UPLOADED = "uploaded"
    SKIPPED = "skipped"  # S3 has the same bytes already
    FAILED = "failed"


@dataclass(frozen=True)
class FileResult:
    file: LogFile
    key: str
    outcome: Outcome
    deleted: bool = False
    detail: str = ""


@dataclass
class BackupReport:
    bucket: str
    prefix: str  # <prefix><host>/
    dry_run: bool
    selection: Selection
    results: list[FileResult] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def uploaded(self) -> int:
        return self.count(Outcome.UPLOADED)

    @property
    def skipped(self) -> int:
        return self.count(Outcome.SKIPPED)

    @property
    def failed(self) -> int:
        return self.count(Outcome.FAILED)

    @property
    def deleted(self) -> int:
        return sum(1 for r in self.results if r.deleted)

    def summary(self) -> str:
        would = "would be " if self.dry_run else ""
        text = (
            f"{self.uploaded} {would}uploaded, {self.skipped} skipped (already in S3), "
            f"{self.deleted} {would}deleted, {self.failed} failed → s3://{self.bucket}/{self.prefix}"
        )
        left = [
            f"{len(self.selection.active)} active",
            f"{len(self.selection.too_young)} too recent",
            f"{len(self.selection.other)} not logs",
        ]
        return f"{'dry run: ' if self.dry_run else ''}{text}; left alone: {', '.join(left)}"


def file_digests(fileobj: Any) -> tuple[int, str, str]:
    """Size, SHA-256 and MD5 (hex) of what ``fileobj`` yields, read in chunks."""
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    while chunk := fileobj.read(CHUNK_SIZE):
        sha256.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    return size, sha256.hexdigest(), md5.hexdigest()


def content_type_for(name: str) -> str:
    return "application/gzip" if name.endswith(".gz") else "text/plain; charset=utf-8"


def head_object(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """HEAD with S3's checksums; None when the object does not exist."""
    try:
        response: dict[str, Any] = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except Exception as exc:
        if error_code(exc) in _NOT_FOUND_CODES:
            return None
        raise
    return response


def backup_logs(
    client: Any,
    bucket: str,
    source: Path,
    *,
    host: str,
    prefix: str = DEFAULT_PREFIX,
    delete_uploaded: bool = False,
    include_active: bool = False,
    min_age_s: float = DEFAULT_MIN_AGE_S,
    dry_run: bool = False,
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    now: float | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> BackupReport:
    """Upload the selected log files under ``source``; see the module's docstring. Never raises for one file."""
    selection = select_logs(
        scan_logs(source),
        now=time.time() if now is None else now,
        min_age_s=min_age_s,
        include_active=include_active,
    )
    key_prefix = f"{normalize_prefix(prefix)}{host}/"
    report = BackupReport(bucket, key_prefix, dry_run, selection)
    for f in selection.upload:
        result = _backup_one(
            client,
            bucket,
            source,
            f,
            host=host,
            prefix=prefix,
            delete=delete_uploaded and f.kind is LogKind.ROTATED,
            dry_run=dry_run,
            multipart_threshold=multipart_threshold,
        )
        if result.outcome is Outcome.FAILED:
            log.warning("%s: %s", f.path, result.detail)
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    log.info("logs backup: %s", report.summary())
    return report


def _backup_one(
    client: Any,
    bucket: str,
    source: Path,
    f: LogFile,
    *,
    host: str,
    prefix: str,
    delete: bool,
    dry_run: bool,
    multipart_threshold: int,
) -> FileResult:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        key = object_key(prefix, host, f.path)
    except ValueError as exc:
        return FileResult(f, "", Outcome.FAILED, detail=f"no object key for this name: {exc}")
    path = source / Path(f.path)
    try:
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            size, sha256_hex, md5_hex = file_digests(fh)
            if matches_remote(head_object(client, bucket, key), size, sha256_hex, md5_hex):
                outcome, detail = Outcome.SKIPPED, "already in S3"
            elif dry_run:
                outcome, detail = Outcome.UPLOADED, "would upload"
            else:
                fh.seek(0)
                single_put = size <= multipart_threshold
                _upload(client, bucket, key, fh, path.name, sha256_hex, single_put, multipart_threshold)
                problem = verification_problem(
                    head_object(client, bucket, key), size, sha256_hex, single_put=single_put
                )
                if problem:
                    return FileResult(f, key, Outcome.FAILED, detail=f"not verified after upload: {problem}")
                outcome, detail = Outcome.UPLOADED, ""
            after = os.fstat(fh.fileno())
        unchanged = after.st_size == before.st_size == size and after.st_mtime_ns == before.st_mtime_ns
        if not unchanged:
            return FileResult(f, key, Outcome.FAILED, detail="changed while being backed up; kept")
        if not delete:
            return FileResult(f, key, outcome, detail=detail)
        if dry_run:
            return FileResult(f, key, outcome, deleted=True, detail=detail)
        now_there = os.lstat(path)
        if (now_there.st_dev, now_there.st_ino) != (before.st_dev, before.st_ino):
            return FileResult(f, key, Outcome.FAILED, detail="replaced by another file meanwhile; kept")
        os.unlink(path)
        return FileResult(f, key, outcome, deleted=True, detail=detail)
    except OSError as exc:
        return FileResult(f, key, Outcome.FAILED, detail=f"local file: {exc}")
    except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
        cause = exc.__cause__ if isinstance(exc, S3UploadFailedError) and exc.__cause__ else exc
        return FileResult(f, key, Outcome.FAILED, detail=describe_s3_error(cause, bucket))


def _upload(
    client: Any,
    bucket: str,
    key: str,
    fh: Any,
    name: str,
    sha256_hex: str,
    single_put: bool,
    multipart_threshold: int,
) -> None:
    metadata = {"sha256": sha256_hex}
    content_type = content_type_for(name)
    if single_put:
        # S3 recomputes the SHA-256 of the bytes it receives and refuses the PUT (BadDigest) when they differ.
        client.put_object(
            Bucket=bucket,
            Key=key,
            Body=fh,
            ContentType=content_type,
            Metadata=metadata,
            ChecksumSHA256=_b64(bytes.fromhex(sha256_hex)),
        )
        return
    from boto3.s3.transfer import TransferConfig

    part = max(multipart_threshold, MIN_PART_SIZE)
    client.upload_fileobj(
        fh,
        bucket,
        key,
        ExtraArgs={"ContentType": content_type, "Metadata": metadata, "ChecksumAlgorithm": "SHA256"},
        Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part),
    )
