"""The upload path of photo intake: bytes on the wire and API CPU per upload, three ways.

* ``presigned`` (P-ZONE's path): ``POST /api/photos`` → the client PUTs the bytes straight to S3 (moto's real HTTP
  server here) → ``POST /api/photos/{id}/complete``; the API fetches the object once to check it.
* ``proxied``: the same photo as one multipart ``POST /api/photos/upload`` through the API.
* ``base64``: the seed's path, the photo base64-encoded in a JSON body (``POST /bench/base64``, a route that exists
  only in this benchmark's app and then runs the same intake code).

Every path ends in the same checks, derivatives and storage, so the CPU differences are the transport's. The API runs
as its own uvicorn process (PostgreSQL, S3 via moto) and its CPU time is read from /proc (psutil) around each path.
Each upload carries a distinct JPEG comment, so deduplication never skips work.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from pzone.db.engine import make_engine
from pzone.migrations import upgrade
from pzone.telemetry import Limits
from pzone_api.api.deps import CsrfChecked, CurrentUser, DbDep, SettingsDep, StoreDep
from pzone_api.api.routes.photos import PhotoOut, photo_out
from pzone_api.intake import IntakeError, store_streamed_upload
from pzone_ingest.messages import from_iot_event
from pzone_ingest.processing import process_batch
from tests.support.api import app_from_env
from tests.support.s3 import FAKE_AWS_ENV, MotoServer
from tests.support.services import create_database, drop_database, free_port, wait_port

BUCKET = "pzone-bench"


class Base64Photo(BaseModel):
    device_id: str
    content_type: str = "image/jpeg"
    image: str


def bench_app_from_env() -> FastAPI:
    """The API plus the seed's base64 route, for comparison only."""
    app = app_from_env()

    @app.post("/bench/base64", status_code=201, dependencies=[CsrfChecked])
    def upload_base64(
        body: Base64Photo, user: CurrentUser, db: DbDep, store: StoreDep, settings: SettingsDep
    ) -> PhotoOut:
        """The seed's upload: the image base64-encoded inside JSON."""
        try:
            data = base64.b64decode(body.image, validate=True)
        except binascii.Error:
            raise HTTPException(422, "image is not base64") from None
        try:
            photo = store_streamed_upload(
                db,
                store,
                settings,
                user,
                io.BytesIO(data),
                content_type=body.content_type,
                device_id=body.device_id,
                zone_id=None,
                taken_at=None,
            )
        except IntakeError as exc:
            raise HTTPException(exc.status, {"code": exc.code, "reason": exc.reason}) from None
        return photo_out(photo, store)

    # The static UI is mounted at "/" last; keep the benchmark route in front of it.
    app.router.routes.insert(0, app.router.routes.pop())
    return app


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment right after SOI: other bytes, same picture."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def upload_section(photos: list[bytes], uploads_per_path: int, log: Any) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    name, url = create_database()
    moto = MotoServer()
    moto.start()
    port = free_port()
    env = {
        **os.environ,
        **FAKE_AWS_ENV,
        "PYTHONPATH": str(root),
        "PZONE_DATABASE_URL": url,
        "PZONE_S3_BUCKET": BUCKET,
        "PZONE_S3_ENDPOINT_URL": moto.endpoint_url,
        "PZONE_S3_REGION": "us-east-1",
        "PZONE_COOKIE_SECURE": "false",
        "PZONE_DATA_DIR": str(Path(os.environ.get("TMPDIR", "/tmp")) / f"pzone-bench-{port}"),
    }
    api = None
    try:
        upgrade(url)
        engine = make_engine(url)
        event = {"v": 1, "seq": 1, "ax": 0.0, "ay": 0.0, "az": 1.0, "zone_id": "zone-1", "device_id": "dev-1"}
        process_batch(engine, [from_iot_event(event)], Limits(), source="lambda")
        engine.dispose()
        import boto3

        boto3.client(
            "s3",
            endpoint_url=moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "benchmarks.intake_uploads:bench_app_from_env",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(port, timeout=30)
        api_cpu = psutil.Process(api.pid)
        return _measure(f"http://127.0.0.1:{port}", api_cpu, photos, uploads_per_path, log)
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=20)
        moto.stop()
        drop_database(name)


def _measure(base_url: str, api_cpu: psutil.Process, photos: list[bytes], n: int, log: Any) -> dict[str, Any]:
    client = httpx.Client(base_url=base_url, timeout=60)
    signed = client.post(
        "/api/auth/signup", json={"email": "bench@example.com", "password": "benchmark password"}
    )
    signed.raise_for_status()
    headers = {"X-CSRF-Token": signed.json()["csrf_token"]}
    storage = httpx.Client(timeout=60)
    results: dict[str, Any] = {}
    for path in ("presigned", "proxied", "base64"):
        sent = image_bytes = 0
        cpu_before, started = _cpu(api_cpu), time.perf_counter()
        for i in range(n):
            data = with_comment(photos[i % len(photos)], f"{path}-{i}-{time.time_ns()}")
            image_bytes += len(data)
            if path == "presigned":
                body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": len(data)}
                created = client.post("/api/photos", json=body, headers=headers)
                created.raise_for_status()
                ticket = created.json()
                put = storage.put(ticket["upload"]["url"], content=data, headers=ticket["upload"]["headers"])
                put.raise_for_status()
                done = client.post(f"/api/photos/{ticket['photo']['id']}/complete", headers=headers)
                sent += len(created.request.content) + len(put.request.content) + len(done.request.content)
            elif path == "proxied":
                request = client.build_request(
                    "POST",
                    "/api/photos/upload",
                    files={"file": ("p.jpg", data, "image/jpeg")},
                    data={"device_id": "dev-1"},
                    headers=headers,
                )
                sent += len(request.read())  # the multipart body as it goes on the wire
                done = client.send(request)
            else:
                body64 = {"device_id": "dev-1", "image": base64.b64encode(data).decode()}
                done = client.post("/bench/base64", json=body64, headers=headers)
                sent += len(done.request.content)
            if done.status_code not in (200, 201):
                raise RuntimeError(f"{path} upload failed: {done.status_code} {done.text[:300]}")
        seconds = time.perf_counter() - started
        cpu = (_cpu(api_cpu) - cpu_before) / n
        results[path] = {
            "bytes_ratio": round(sent / image_bytes, 4),
            "api_cpu_s": round(cpu, 4),
            "wall_s_per_upload": round(seconds / n, 3),
        }
        log(f"{path}: {results[path]}")
    return {
        "uploads_per_path": n,
        "presigned_bytes_ratio": results["presigned"]["bytes_ratio"],
        "proxied_bytes_ratio": results["proxied"]["bytes_ratio"],
        "base64_bytes_ratio": results["base64"]["bytes_ratio"],
        "presigned_api_cpu_s": results["presigned"]["api_cpu_s"],
        "proxied_api_cpu_s": results["proxied"]["api_cpu_s"],
        "base64_api_cpu_s": results["base64"]["api_cpu_s"],
        "upload_paths": results,
    }
