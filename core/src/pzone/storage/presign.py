"""Presigned S3 URLs at one SigV4 signature each: botocore's URLs byte for byte, without its per-call resolving."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

_PROBE_KEY = "pzone-presign-probe"


class _Presigner:
    """Presigned S3 URLs signed by botocore's own ``S3SigV4QueryAuth``, with the endpoint and region resolved once.

    ``generate_presigned_url`` resolves the endpoint ruleset and runs the client's event hooks on every call
    (~0.2 ms alone, ~0.7 ms inside a busy API process, three per upload and two per photo of a history page).
    The URL of an object differs from another's only in its path, so the first presign (botocore's, for a probe
    key) gives the base URL (virtual-hosted or path style, the public endpoint) and the signing region and
    service; each URL after it is one SigV4 query signature with the session's current credentials (refreshed by
    botocore when they are temporary: instance, task or IRSA roles). The URLs are botocore's, byte for byte
    (``tests/core/test_storage.py`` compares both at one instant).
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

    def sign(
        self,
        method: str,
        key: str,
        expires_s: int,
        content_type: str | None = None,
        content_length: int | None = None,
    ) -> str:
        from botocore.auth import S3SigV4QueryAuth
        from botocore.awsrequest import AWSRequest

        base, region, service = self._resolved or self._resolve()
        credentials = self._session.get_credentials()
        if credentials is None:  # as botocore's own presigning says it
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        headers = {"Content-Type": content_type} if content_type is not None else {}
        if content_length is not None:  # signed: S3 refuses a body of another length
            headers["Content-Length"] = str(content_length)
        request = AWSRequest(method=method, url=base + quote(key, safe="/~"), headers=headers)
        S3SigV4QueryAuth(credentials.get_frozen_credentials(), service, region, expires=expires_s).add_auth(
            request
        )
        return str(request.url)
