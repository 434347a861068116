"""A real S3 API for tests: moto's HTTP server as a subprocess on its own port.

boto3 talks to it over HTTP exactly as it would to AWS (signing included); presigned URLs can be used with plain
``urllib``. Note: moto's server does not check signatures or the expiry of presigned URLs (moto 5.2).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field

from tests.support.services import free_port, wait_port

# Fake credentials: boto3 must sign requests, and must never find real ones during tests.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that could point boto3 at real credentials or another endpoint.
AWS_ENV_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
)


@dataclass
class MotoServer:
    """``python -m moto.server`` on 127.0.0.1 and a free port; ``reset()`` empties every bucket between tests."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, **FAKE_AWS_ENV}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            wait_port(self.port, timeout=30)
        except TimeoutError:
            code = self.process.poll()
            self.stop()
            raise RuntimeError(f"moto server did not listen on port {self.port} (exit code {code})") from None

    def reset(self) -> None:
        """Forget all state (moto's own reset endpoint)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None


def bucket_keys(server: MotoServer, bucket: str, prefix: str = "") -> set[str]:
    """Every key under ``prefix`` in ``bucket`` (boto3's own paginator)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=server.endpoint_url)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}
