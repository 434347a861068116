"""The upload path of photo intake: bytes on the wire, and CPU per upload in the API and in the photo worker.

* ``presigned`` (P-ZONE's path): ``POST /api/photos`` → the client PUTs the bytes straight to S3 (moto's real HTTP
  server here) → ``POST /api/photos/{id}/complete``: the API checks the object's size with a HEAD and enqueues the
  job; the photo worker fetches the object once to check, hash, copy and thumbnail it.
* ``proxied``: the same photo as one multipart ``POST /api/photos/upload`` through the API, which streams the body
  to the store's staging key and enqueues the same job.
* ``presigned_batch``: the presigned path for ``BATCH`` photos picked at once (the upload page's multi-select):
  one ``POST /api/photos/batch``, a PUT per photo straight to S3, one ``POST /api/photos/batch/complete``; figures
  per photo.
* ``base64``: the seed's path, the photo base64-encoded in a JSON body (``POST /bench/base64``, a route that exists
  only in this benchmark's app: decode, stage in the store, enqueue the same job).

Every path ends in the same job (checks, derivatives, storage) in the worker, so the API's CPU differences are the
transport's. The API runs as its own uvicorn process and the worker (``pzone photos worker``) as another, talking
through the shared Redis (a queue name of its own), with PostgreSQL and S3 via moto; the CPU time of each process is
read from /proc (psutil) around each path: ``*_api_cpu_s`` is the API process only, ``*_worker_cpu_s`` the worker's,
so that their sum is the honest total. One upload per path warms both processes up first and is not counted.
Each upload carries a distinct JPEG comment, so deduplication never skips work.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from fastapi import FastAPI, HTTPException, Response, UploadFile
from pydantic import BaseModel
from starlette.datastructures import Headers

from pzone.migrations import upgrade
from pzone_api.api.deps import CsrfChecked, CurrentSession, DbDep, PhotoQueueDep, SettingsDep, StoreDep
from pzone_api.api.routes.photos import PhotoOut, upload_photo
from tests.support.api import (
    TEST_REDIS_URL,
    app_from_env,
    delete_queue_keys,
    delete_redis_keys,
    random_queue_name,
    random_redis_prefix,
    uvicorn_command,
)
from tests.support.photos import add_device
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
    async def upload_base64(
        body: Base64Photo,
        response: Response,
        session: CurrentSession,
        db: DbDep,
        store: StoreDep,
        settings: SettingsDep,
        queue: PhotoQueueDep,
    ) -> PhotoOut:
        """The seed's upload: the image base64-encoded inside JSON, then staged and queued by the multipart
        route's own handler, like the others."""
        try:
            data = base64.b64decode(body.image, validate=True)
        except binascii.Error:
            raise HTTPException(422, "image is not base64") from None
        upload = UploadFile(io.BytesIO(data), headers=Headers({"content-type": body.content_type}))
        return await upload_photo(
            response, session, db, store, settings, queue, file=upload, device_id=body.device_id
        )

    # The static UI is mounted at "/" last; keep the benchmark route in front of it.
    app.router.routes.insert(0, app.router.routes.pop())
    return app


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment right after SOI: other bytes, same picture."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


@dataclass(frozen=True)
class CpuSample:
    """A process's CPU time: from /proc/<pid>/stat (all threads, also exited ones, in 10 ms ticks) and per live
    thread from /proc/<pid>/task/<tid>/schedstat (nanoseconds)."""

    ticks_s: float
    threads_s: dict[int, float]


def _cpu(process: psutil.Process) -> CpuSample:
    times = process.cpu_times()
    threads: dict[int, float] = {}
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            threads[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
    return CpuSample(float(times.user + times.system), threads)


def _cpu_used(before: CpuSample, after: CpuSample) -> float:
    """CPU seconds between two samples: nanosecond-exact when no thread ended in between (a thread born in
    between counts whole), else the 10 ms-tick figure, which also counts the threads that ended."""
    if before.threads_s and set(before.threads_s) <= set(after.threads_s):
        return sum(now - before.threads_s.get(tid, 0.0) for tid, now in after.threads_s.items())
    return after.ticks_s - before.ticks_s


def upload_section(
    photos: list[bytes],
    uploads_per_path: int,
    log: Any,
    large_photos: list[bytes] | None = None,
    large_uploads_per_path: int = 0,
    link: Link | None = None,
    link_uploads_per_path: int = 0,
) -> dict[str, Any]:
    """The three paths with ``photos``, then (when given) again with ``large_photos``, then with ``photos`` sent
    over ``link``, all in the same processes."""
    root = Path(__file__).resolve().parents[1]
    name, url = create_database()
    moto = MotoServer()
    moto.start()
    port = free_port()
    queue_name, redis_prefix = random_queue_name(), random_redis_prefix()
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
        "PZONE_REDIS_URL": TEST_REDIS_URL,
        "PZONE_PROCESSING_QUEUE_NAME": queue_name,
        "PZONE_TEST_REDIS_PREFIX": redis_prefix,
        "PZONE_LOG_LEVEL": "WARNING",
    }
    for unset in ("PZONE_MODEL_TIER_URL", "PZONE_PROCESSING_IMMEDIATE"):
        env.pop(unset, None)
    api = worker = None
    try:
        upgrade(url)
        add_device(url)  # devices come from telemetry: dev-1 in zone-1, as ingest registers it
        import boto3

        boto3.client(
            "s3",
            endpoint_url=moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        api = subprocess.Popen(
            uvicorn_command("benchmarks.intake_uploads:bench_app_from_env", port),
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "pzone.cli", "photos", "worker"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(port, timeout=30)
        processes = {"api": psutil.Process(api.pid), "worker": psutil.Process(worker.pid)}
        return _measure(
            f"http://127.0.0.1:{port}",
            processes,
            photos,
            uploads_per_path,
            log,
            large_photos or [],
            large_uploads_per_path,
            link,
            link_uploads_per_path,
        )
    finally:
        for process in (api, worker):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        moto.stop()
        drop_database(name)
        delete_queue_keys(TEST_REDIS_URL, queue_name)
        delete_redis_keys(TEST_REDIS_URL, redis_prefix)


BATCH = 8  # photos per batch on the presigned_batch path
# The API's CPU per second with nothing to do (uvicorn's 10 ticks a second, the event loop's timers): every path
# pays it for its wall time, the paths over a slow link the most.
IDLE_S = 2.0


def _upload_batch(
    client: httpx.Client, storage: httpx.Client, headers: dict[str, str], datas: list[bytes]
) -> int:
    """One batch upload of ``datas``; returns the request bytes the client sent. Raises unless all were stored."""
    body = {"photos": [{"device_id": "dev-1", "content_type": "image/jpeg", "size": len(d)} for d in datas]}
    created = client.post("/api/photos/batch", json=body, headers=headers)
    created.raise_for_status()
    items = created.json()["items"]
    sent = len(created.request.content)
    for item, data in zip(items, datas, strict=True):
        put = storage.put(item["upload"]["url"], content=data, headers=item["upload"]["headers"])
        put.raise_for_status()
        sent += len(put.request.content)
    ids = [item["photo"]["id"] for item in items]
    done = client.post("/api/photos/batch/complete", json={"ids": ids}, headers=headers)
    sent += len(done.request.content)
    if done.status_code != 200 or any(a["status"] != 200 for a in done.json()["items"]):
        raise RuntimeError(f"batch upload failed: {done.status_code} {done.text[:300]}")
    return sent


@dataclass(frozen=True)
class Link:
    """A client's uplink: the photo's bytes leave the client ``piece_bytes`` at a time at ``mbit_per_s``.

    P-ZONE's deployment streams the multipart upload on to the API as it arrives (nginx and the upload Ingress:
    ``proxy_request_buffering off``), so the API reads it in the pieces and at the pace of the client's link; on
    loopback the same body arrives in a few large reads, the proxy's best case. The presigned path's PUT goes to
    S3 at the same pace; the API's CPU is read over the whole upload on every path alike.
    """

    mbit_per_s: float
    piece_bytes: int

    def paced(self, body: bytes) -> Iterator[bytes]:
        bytes_per_s = self.mbit_per_s * 1e6 / 8
        started = time.perf_counter()
        for offset in range(0, len(body), self.piece_bytes):
            yield body[offset : offset + self.piece_bytes]
            ahead = (offset + self.piece_bytes) / bytes_per_s - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)


def _send(
    client: httpx.Client, method: str, url: str, body: bytes, headers: dict[str, str], link: Link | None
) -> httpx.Response:
    """``body`` at once, or paced by ``link`` (with its Content-Length, as a browser sends a file: not chunked)."""
    if link is None:
        return client.request(method, url, content=body, headers=headers)
    paced_headers = {**headers, "Content-Length": str(len(body))}
    return client.request(method, url, content=link.paced(body), headers=paced_headers)


def _upload(
    client: httpx.Client,
    storage: httpx.Client,
    headers: dict[str, str],
    path: str,
    data: bytes,
    link: Link | None = None,
) -> int:
    """One upload by ``path`` (its image bytes paced by ``link`` when given); returns the request bytes the client
    sent. Raises unless the photo was stored."""
    if path == "presigned":
        body = {"device_id": "dev-1", "content_type": "image/jpeg", "size": len(data)}
        created = client.post("/api/photos", json=body, headers=headers)
        created.raise_for_status()
        ticket = created.json()
        put = _send(storage, "PUT", ticket["upload"]["url"], data, ticket["upload"]["headers"], link)
        put.raise_for_status()
        done = client.post(f"/api/photos/{ticket['photo']['id']}/complete", headers=headers)
        sent = len(created.request.content) + len(data) + len(done.request.content)
    elif path == "proxied":
        request = client.build_request(
            "POST",
            "/api/photos/upload",
            files={"file": ("p.jpg", data, "image/jpeg")},
            data={"device_id": "dev-1"},
            headers=headers,
        )
        multipart = request.read()  # the multipart body as it goes on the wire
        sent = len(multipart)
        content_type = {"Content-Type": request.headers["Content-Type"]}
        done = _send(client, "POST", "/api/photos/upload", multipart, {**headers, **content_type}, link)
    else:
        body64 = json.dumps({"device_id": "dev-1", "image": base64.b64encode(data).decode()}).encode()
        sent = len(body64)
        json_type = {"Content-Type": "application/json"}
        done = _send(client, "POST", "/bench/base64", body64, {**headers, **json_type}, link)
    if done.status_code not in (200, 201) or done.json()["status"] != "stored":
        raise RuntimeError(f"{path} upload failed: {done.status_code} {done.text[:300]}")
    return sent


PATHS = ("presigned", "proxied", "base64")
BATCH_PATH = "presigned_batch"


def _measure(
    base_url: str,
    processes: dict[str, psutil.Process],
    photos: list[bytes],
    n: int,
    log: Any,
    large_photos: list[bytes],
    large_n: int,
    link: Link | None = None,
    link_n: int = 0,
) -> dict[str, Any]:
    client = httpx.Client(base_url=base_url, timeout=60)
    signed = client.post(
        "/api/auth/signup", json={"email": "bench@example.com", "password": "benchmark password"}
    )
    signed.raise_for_status()
    headers = {"X-CSRF-Token": signed.json()["csrf_token"]}
    storage = httpx.Client(timeout=60)
    for path in PATHS:  # warm-up: imports, connections, first-call costs in both processes
        _upload(client, storage, headers, path, with_comment(photos[0], f"warm-{path}-{time.time_ns()}"))
    _upload_batch(client, storage, headers, [with_comment(photos[0], f"warm-batch-{i}") for i in range(2)])
    idle_before = _cpu(processes["api"])
    time.sleep(IDLE_S)
    api_idle_cpu_per_s = _cpu_used(idle_before, _cpu(processes["api"])) / IDLE_S
    results = _run_paths(client, storage, headers, processes, photos, n, log, "")
    results[BATCH_PATH] = _run_batches(client, storage, headers, processes, photos, max(n, BATCH), log)
    out: dict[str, Any] = {
        "uploads_per_path": n,
        "presigned_bytes_ratio": results["presigned"]["bytes_ratio"],
        "proxied_bytes_ratio": results["proxied"]["bytes_ratio"],
        "base64_bytes_ratio": results["base64"]["bytes_ratio"],
        "presigned_api_cpu_s": results["presigned"]["api_cpu_s"],
        "proxied_api_cpu_s": results["proxied"]["api_cpu_s"],
        "base64_api_cpu_s": results["base64"]["api_cpu_s"],
        "presigned_worker_cpu_s": results["presigned"]["worker_cpu_s"],
        "proxied_worker_cpu_s": results["proxied"]["worker_cpu_s"],
        "base64_worker_cpu_s": results["base64"]["worker_cpu_s"],
        "presigned_batch_bytes_ratio": results[BATCH_PATH]["bytes_ratio"],
        "presigned_batch_api_cpu_s": results[BATCH_PATH]["api_cpu_s"],
        "presigned_batch_worker_cpu_s": results[BATCH_PATH]["worker_cpu_s"],
        "batch_size": BATCH,
        **_ratios(results, ""),
        "upload_paths": results,
        "auth_request_api_cpu_s": _auth_request_cpu(client, processes["api"]),
        "api_idle_cpu_per_s": round(api_idle_cpu_per_s, 5),
    }
    if large_photos and large_n > 0:
        for (
            path
        ) in PATHS:  # first uploads of this size (the proxied path switches to a multipart upload to S3)
            data = with_comment(large_photos[0], f"warm-large-{path}-{time.time_ns()}")
            _upload(client, storage, headers, path, data)
        large = _run_paths(client, storage, headers, processes, large_photos, large_n, log, "large ")
        out.update(
            {
                "large_photo_mb": round(sum(len(p) for p in large_photos) / len(large_photos) / 1e6, 2),
                "large_uploads_per_path": large_n,
                **{f"large_{path}_api_cpu_s": large[path]["api_cpu_s"] for path in PATHS},
                **_ratios(large, "large_"),
                "large_upload_paths": large,
            }
        )
    if link is not None and link_n > 0:
        paced = _run_paths(client, storage, headers, processes, photos, link_n, log, "link ", link)
        out.update(
            {
                "link_mbit_per_s": link.mbit_per_s,
                "link_piece_kib": round(link.piece_bytes / 1024, 1),
                "link_uploads_per_path": link_n,
                **{f"link_{path}_api_cpu_s": paced[path]["api_cpu_s"] for path in PATHS},
                **_ratios(paced, "link_"),
                "link_upload_paths": paced,
            }
        )
    return out


def _run_paths(
    client: httpx.Client,
    storage: httpx.Client,
    headers: dict[str, str],
    processes: dict[str, psutil.Process],
    photos: list[bytes],
    n: int,
    log: Any,
    label: str,
    link: Link | None = None,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for path in PATHS:

        def uploads(path: str = path) -> tuple[int, int]:
            sent = image_bytes = 0
            for i in range(n):
                data = with_comment(photos[i % len(photos)], f"{label}{path}-{i}-{time.time_ns()}")
                image_bytes += len(data)
                sent += _upload(client, storage, headers, path, data, link)
            return sent, image_bytes

        results[path] = _measured(processes, n, uploads)
        log(f"{label}{path}: {results[path]}")
    return results


def _run_batches(
    client: httpx.Client,
    storage: httpx.Client,
    headers: dict[str, str],
    processes: dict[str, psutil.Process],
    photos: list[bytes],
    n: int,
    log: Any,
) -> dict[str, Any]:
    """The presigned_batch path: ``n`` photos (rounded up to whole batches) in batches of ``BATCH``."""
    batches = -(-n // BATCH)
    count = batches * BATCH

    def uploads() -> tuple[int, int]:
        sent = image_bytes = 0
        for b in range(batches):
            datas = [
                with_comment(photos[i % len(photos)], f"batch-{b}-{i}-{time.time_ns()}") for i in range(BATCH)
            ]
            image_bytes += sum(len(d) for d in datas)
            sent += _upload_batch(client, storage, headers, datas)
        return sent, image_bytes

    result = {**_measured(processes, count, uploads), "uploads": count}
    log(f"{BATCH_PATH} ({BATCH} per batch): {result}")
    return result


def _measured(
    processes: dict[str, psutil.Process], count: int, uploads: Callable[[], tuple[int, int]]
) -> dict[str, Any]:
    """Figures per upload of ``uploads()``, which makes ``count`` uploads and returns the request bytes sent and the
    image bytes among them: those bytes' ratio, the CPU of each process (API, worker) and the wall time."""
    before = {name: _cpu(process) for name, process in processes.items()}
    started = time.perf_counter()
    sent, image_bytes = uploads()
    seconds = time.perf_counter() - started
    cpu = {name: _cpu_used(before[name], _cpu(process)) / count for name, process in processes.items()}
    return {
        "bytes_ratio": round(sent / image_bytes, 4),
        "api_cpu_s": round(cpu["api"], 4),
        "worker_cpu_s": round(cpu["worker"], 4),
        "total_cpu_s": round(cpu["api"] + cpu["worker"], 4),
        "wall_s_per_upload": round(seconds / count, 3),
    }


def _ratios(results: dict[str, Any], prefix: str) -> dict[str, float]:
    presigned_api = max(results["presigned"]["api_cpu_s"], 1e-4)
    out = {
        f"{prefix}proxied_vs_presigned_api_cpu": round(results["proxied"]["api_cpu_s"] / presigned_api, 2),
        f"{prefix}base64_vs_presigned_api_cpu": round(results["base64"]["api_cpu_s"] / presigned_api, 2),
    }
    if BATCH_PATH in results:
        batch_api = max(results[BATCH_PATH]["api_cpu_s"], 1e-4)
        out[f"{prefix}proxied_vs_presigned_batch_api_cpu"] = round(
            results["proxied"]["api_cpu_s"] / batch_api, 2
        )
        out[f"{prefix}base64_vs_presigned_batch_api_cpu"] = round(
            results["base64"]["api_cpu_s"] / batch_api, 2
        )
    return out


def _auth_request_cpu(client: httpx.Client, api: psutil.Process, n: int = 100) -> float:
    """API CPU of one small signed-in request (``GET /api/auth/me``: session lookup, user row, JSON answer): the
    floor under each of the presigned path's two requests."""
    for _ in range(10):
        client.get("/api/auth/me").raise_for_status()
    before = _cpu(api)
    for _ in range(n):
        client.get("/api/auth/me")
    return round(_cpu_used(before, _cpu(api)) / n, 5)
