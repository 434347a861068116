"""The S3 object store: objects in a bucket through boto3, and presigned URLs that are S3's own.

Works with anything speaking S3's API (MinIO, moto, Ceph). boto3 is imported only when a store is made, so the
local backend and the settings import without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pzone.storage.keys import (
    _check_expires,
    _check_max_bytes,
    _LimitedReader,
    validate_content_type,
    validate_key,
)
from pzone.storage.presign import _Presigner
from pzone.storage.protocol import (
    DEFAULT_CONTENT_TYPE,
    ListedObject,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreUnavailable,
    ObjectStream,
    Readable,
)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _is_outage(exc: BaseException) -> bool:
    """A network failure or the service's own 5xx, anywhere in the chain (s3transfer wraps what it met)."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BotoConnectionError | HTTPClientError):
            return True
        status = (getattr(seen, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int) and status >= 500:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def _outage_as_unavailable(bucket: str) -> Iterator[None]:
    try:
        yield
    except ObjectStoreUnavailable:
        raise
    except Exception as exc:
        if _is_outage(exc):
            raise ObjectStoreUnavailable(
                f"the object store (bucket {bucket!r}) is unreachable: {type(exc).__name__}"
            ) from exc
        raise


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
        max_attempts: int = 5,
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
                retries={"mode": "standard", "max_attempts": max_attempts},
                # botocore's default waits 60 s for a connection; an unreachable store should answer sooner.
                connect_timeout=5,
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
        with _outage_as_unavailable(self.bucket):
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
        with _outage_as_unavailable(self.bucket):
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
        with _outage_as_unavailable(self.bucket):
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
        with _outage_as_unavailable(self.bucket):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                    raise ObjectNotFound(key) from None
                raise
            body = response["Body"]
            try:
                yield body  # a read that fails mid-stream is an outage too
            finally:
                body.close()

    def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            with _outage_as_unavailable(self.bucket):
                response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ObjectStoreUnavailable:
            raise
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
        with _outage_as_unavailable(self.bucket):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def list_objects(self, prefix: str) -> Iterator[ListedObject]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        with _outage_as_unavailable(self.bucket):
            for page in pages:
                for item in page.get("Contents", []):
                    yield ListedObject(str(item["Key"]), int(item["Size"]), item["LastModified"])

    def copy(self, source_key: str, target_key: str, content_type: str) -> None:
        validate_key(source_key)
        validate_key(target_key)
        validate_content_type(content_type)
        try:
            with _outage_as_unavailable(self.bucket):
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

    def presign_put(
        self, key: str, content_type: str, *, max_bytes: int, expires_s: int = 900, exact: bool = False
    ) -> str:
        """An S3 SigV4 presigned PUT URL; ``Content-Type`` is a signed header, so the client must send exactly it.

        ``exact``: ``Content-Length: max_bytes`` is signed too, so S3 refuses a PUT of any other length. Without it
        nothing caps the PUT: re-check the size on completion with :func:`check_uploaded_object`.
        """
        validate_key(key)
        validate_content_type(content_type)
        _check_max_bytes(max_bytes)
        _check_expires(expires_s)
        length = max_bytes if exact else None
        if self._presigner is not None:
            return self._presigner.sign("PUT", key, expires_s, content_type, length)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ContentType": content_type}
        if length is not None:
            params["ContentLength"] = length
        return str(
            self.presign_client.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=expires_s, HttpMethod="PUT"
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
