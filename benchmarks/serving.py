"""Model tier throughput and latency: the BentoML tier against ONNX Runtime in-process and a naive torch service.

Three figures, all in one run on the same machine:

- **the limit**: ONNX Runtime in this process, the same stored model through ``pzone_model.runtime.load_model``
  with the tier's thread count, batches of already letterboxed images (images/s, best batch size);
- **the tier**: a real ``bentoml serve`` subprocess of the repository root (bentofile.yaml's entry point, as
  ``uv run bentoml serve`` there; a private BentoML store, model watcher off), one photo per ``POST /classify``
  sent as the web front sends it (``pzone.preprocess.model_input_bmp``: the letterboxed square as an uncompressed
  BMP), at several concurrency levels (closed loop), plus one open-loop
  run at a constant arrival rate of about half the tier's peak for its latency under load, and one closed-loop run
  with the photo itself (a 640×480 JPEG, as a client other than the front may send) for comparison;
- **the naive service**: FastAPI + uvicorn (one process) + the torch model in eval mode, one image per request,
  ``pzone.preprocess.load_square`` and ``pzone_training.models.predict`` (the same flip averaging), at the same
  concurrency levels.

The model is the default architecture (``tiny_cnn`` at 96 px, untrained, seeded) exported by the package stage's
``export_onnx`` and stored by its ``import_model``. The photos are ``pzone_stack.photosim`` renders at 640×480; the load
generator (``benchmarks.lean_http``: raw HTTP/1.1 keep-alive on uvloop, in this process) writes pre-encoded requests
and shares the machine's cores with the servers, so its CPU is measured and reported too.

    uv run python benchmarks/serving.py --quick     # about 40 s on a 2-core machine (limit: 45 s)
    uv run python benchmarks/serving.py             # more concurrency levels, longer windows

Progress and a table go to stderr; the last line on stdout is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.support without PYTHONPATH=.
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from fastapi import FastAPI, File, UploadFile  # noqa: E402

from benchmarks.lean_http import Connection, HTTPError, Pool, Response, encode_post  # noqa: E402
from pzone.preprocess import model_input_bmp  # noqa: E402
from pzone.tier_contract import (  # noqa: E402
    CLASSIFY_PATH,
    ERROR,
    IMAGES_FIELD,
    LABEL,
    answer,
    image_kind,
    result_item,
)
from pzone_model import serve_command  # noqa: E402
from tests.support.services import free_port  # noqa: E402

ARCH = "tiny_cnn"
IMAGE_SIZE = 96
PHOTO_SIZE = (640, 480)
MLFLOW_VERSION = "bench"
NAIVE_CHECKPOINT_ENV = "PZONE_BENCH_CHECKPOINT"
NAIVE_THREADS_ENV = "PZONE_BENCH_TORCH_THREADS"

# The open-loop generator's pool starts with this many connections (more open on demand): enough for the requests
# that overlap at half the tier's peak.
OPEN_LOOP_CONNECTIONS = 16

TARGET_TIER_VS_INPROCESS = 0.70
TARGET_TIER_VS_NAIVE = 3.0
TARGET_P99_VS_SINGLE = 3.0

QUICK: dict[str, Any] = {
    "levels": (1, 4, 16),
    "seconds": 1.5,
    "warmup": 0.3,
    "half_seconds": 2.2,
    "inprocess_seconds": 0.4,
    "batches": (1, 4, 8, 32),
    "one_session": False,  # the limit from the tier's sessions x threads only (the full run tries 1 x all too)
    "photos": 6,
    "extras_seconds": 1.2,
    "extras_concurrency": 4,
    "multi_images": 8,
}
FULL: dict[str, Any] = {
    "levels": (1, 2, 4, 8, 16, 32, 64),
    "one_session": True,
    "seconds": 6.0,
    "warmup": 1.0,
    "half_seconds": 10.0,
    "inprocess_seconds": 2.0,
    "batches": (1, 2, 4, 8, 16, 32, 64),
    "photos": 12,
    "extras_seconds": 4.0,
    "extras_concurrency": 4,
    "multi_images": 8,
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


# ---------------------------------------------------------------------------------------------------------------
# the naive service (run by uvicorn in its own process: --factory benchmarks.serving:naive_app)


def naive_app() -> FastAPI:
    """FastAPI + torch eager, one image per request: what a first version of the tier would look like."""
    import torch

    from pzone.preprocess import load_square
    from pzone_training.models import load_checkpoint, predict

    threads = int(os.environ.get(NAIVE_THREADS_ENV, "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    model, meta = load_checkpoint(os.environ[NAIVE_CHECKPOINT_ENV])
    model.eval()
    size, classes = int(meta["image_size"]), list(meta["classes"])
    app = FastAPI()

    @app.post(CLASSIFY_PATH)
    def classify(image: UploadFile = File(..., alias=IMAGES_FIELD)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
        square = load_square(image.file, size)
        probs = predict(model, square[None], flip_tta=True)[0]
        label = classes[int(np.argmax(probs))]
        return answer(
            [result_item(label, {c: float(p) for c, p in zip(classes, probs, strict=True)}, "naive")]
        )

    @app.get("/readyz")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


# ---------------------------------------------------------------------------------------------------------------
# inputs: the model, the photos, the request bodies


@dataclass(frozen=True)
class Prepared:
    checkpoint: Path
    onnx: Path
    bentoml_home: Path
    model_tag: str
    meta: dict[str, Any]


def prepare_model(workdir: Path) -> Prepared:
    """The default architecture, seeded and untrained: a torch checkpoint, its ONNX export, a store import."""
    import torch

    from pzone.tilt import TILT_CLASSES
    from pzone_training.augment import MEAN, STD
    from pzone_training.bento import import_model
    from pzone_training.models import build_model, save_checkpoint
    from pzone_training.onnx_export import export_onnx

    torch.manual_seed(0)
    model = build_model(ARCH, len(TILT_CLASSES)).eval()
    meta: dict[str, Any] = {
        "arch": ARCH,
        "classes": list(TILT_CLASSES),
        "image_size": IMAGE_SIZE,
        "mean": list(MEAN),
        "std": list(STD),
    }
    checkpoint = workdir / "model.pt"
    save_checkpoint(checkpoint, model, meta)
    onnx_path = workdir / "model.onnx"
    export_onnx(model, meta, onnx_path)
    home = workdir / "bentoml"
    # BentoML reads the variable at this process's first store access, which is the import below.
    os.environ["BENTOML_HOME"] = str(home)
    imported = import_model(onnx_path, meta, {"mlflow_version": MLFLOW_VERSION})
    return Prepared(checkpoint, onnx_path, home, imported.tag, meta)


def render_photos(count: int) -> list[bytes]:
    from pzone_stack.photosim.render import render_photo

    rng = np.random.default_rng(5)
    tilts = np.linspace(0.0, 85.0, count)
    return [render_photo(float(t), rng, size=PHOTO_SIZE) for t in tilts]


@dataclass(frozen=True)
class Body:
    content: bytes
    headers: dict[str, str]
    images: int = 1


def multipart_bodies(photos: Sequence[bytes], per_request: int = 1) -> list[Body]:
    """Pre-encoded multipart bodies of ``per_request`` images each (as the API's client sends them),
    one starting at each image: the load generator only writes bytes."""
    out = []
    for first in range(len(photos)):
        boundary = f"pzonebench{first:04d}{os.urandom(8).hex()}"
        content = b""
        for j in range(per_request):
            index = (first + j) % len(photos)
            kind = image_kind(photos[index])
            content += (
                (
                    f"--{boundary}\r\nContent-Disposition: form-data; "
                    f'name="{IMAGES_FIELD}"; filename="{index}.{kind}"\r\n'
                    f"Content-Type: image/{kind}\r\n\r\n"
                ).encode()
                + photos[index]
                + b"\r\n"
            )
        content += f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        out.append(Body(content, headers, per_request))
    return out


# ---------------------------------------------------------------------------------------------------------------
# processes


def process_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of a process and of each of its live descendants, by pid."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out: dict[int, float] = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            out[proc.pid] = times.user + times.system
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants."""
    return sum(process_cpu_s(pid).values())


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def hostname(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def host(self) -> str:
        """The ``Host`` header's value."""
        return self.url.split("://", 1)[1]

    def cpu_s(self) -> float:
        return tree_cpu_s(self.process.pid)

    def cpu_by_process(self) -> dict[int, float]:
        return process_cpu_s(self.process.pid)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_process(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Server:
    port = free_port()
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(name, process, f"http://127.0.0.1:{port}", log_path)


def wait_ready(server: Server, timeout: float = 90.0) -> None:
    from tests.support.tiny_model import wait_ready as ready

    ready(server.url, server.process, timeout, server.log_tail)


@contextlib.contextmanager
def servers(prepared: Prepared, threads: int, workers: int, workdir: Path) -> Iterator[tuple[Server, Server]]:
    tier = start_process(
        "tier",
        serve_command(str(ROOT)),
        {
            "BENTOML_HOME": str(prepared.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "True",
            "PZONE_MODEL_WATCH_INTERVAL_S": "0",
            "PZONE_MODEL_WORKERS": str(workers),
            "PZONE_ORT_THREADS": str(threads),
        },
        workdir,
    )
    naive = start_process(
        "naive",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "benchmarks.serving:naive_app",
            "--log-level",
            "warning",
        ],
        {
            NAIVE_CHECKPOINT_ENV: str(prepared.checkpoint),
            NAIVE_THREADS_ENV: str(threads * workers),  # one process: all the tier's threads
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
        workdir,
    )
    try:
        wait_ready(tier)
        wait_ready(naive)
        yield tier, naive
    finally:
        tier.stop()
        naive.stop()


# ---------------------------------------------------------------------------------------------------------------
# in-process: the limit


def sessions_rate(sessions: Sequence[Any], images: np.ndarray, seconds: float) -> tuple[float, float]:
    """Images/s of every session called at once, each from its own thread, for ``seconds``; and this process's CPU
    seconds per image."""
    counts = [0] * len(sessions)
    stop = threading.Event()

    def loop(index: int) -> None:
        while not stop.is_set():
            sessions[index].predict(images)
            counts[index] += len(images)

    for session in sessions:
        session.predict(images)  # warm-up
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(len(sessions))]
    start, cpu0 = time.perf_counter(), time.process_time()
    for thread in pool:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - start
    return sum(counts) / wall, (time.process_time() - cpu0) / max(1, sum(counts))


def limit_again(
    prepared: Prepared, inputs: Sequence[bytes], results: dict[str, Any], seconds: float
) -> float:
    """The limit's best layout and batch once more, after the tier's runs: this VM's speed drifts by minutes, so
    the limit is measured on both sides of the runs it is compared with."""
    import bentoml

    from pzone_model.runtime import decode_image, load_model, model_version

    stored = bentoml.models.get(prepared.model_tag)
    version = model_version(stored.tag.name, stored.tag.version, stored.info.labels)
    sessions_n, threads = (int(v) for v in results["inprocess_limit_layout"].split("x"))
    sessions = [load_model(Path(stored.path), str(stored.tag), version, threads) for _ in range(sessions_n)]
    size, batch = int(results["image_size"]), int(results["inprocess_limit_batch"])
    squares = [decode_image(p, size, 40_000_000) for p in inputs]
    images = np.stack([squares[i % len(squares)] for i in range(batch)])
    per_s, _ = sessions_rate(sessions, images, seconds)
    return round(per_s, 1)


def inprocess_section(
    prepared: Prepared,
    inputs: Sequence[bytes],
    photos: Sequence[bytes],
    threads: int,
    workers: int,
    batches: Sequence[int],
    seconds: float,
    one_session_too: bool = True,
) -> dict[str, Any]:
    """The limit: ONNX Runtime alone on letterboxed images, with the tier's threads. The tier runs ``workers``
    sessions of ``threads`` threads each, so the limit is the better of that (as many sessions, called at once
    from as many threads: ORT releases the GIL) and one session with all ``workers × threads`` threads."""
    import bentoml

    from pzone_model.runtime import decode_image, load_model, model_version

    stored = bentoml.models.get(prepared.model_tag)
    version = model_version(stored.tag.name, stored.tag.version, stored.info.labels)
    model = load_model(Path(stored.path), str(stored.tag), version, threads)
    sessions = [model] + [
        load_model(Path(stored.path), str(stored.tag), version, threads) for _ in range(workers - 1)
    ]
    whole = (
        load_model(Path(stored.path), str(stored.tag), version, threads * workers) if workers > 1 else None
    )
    size = model.meta.image_size
    squares = [decode_image(p, size, 40_000_000) for p in inputs]

    cpu_per_image: dict[str, float] = {}

    def rate(name: str, fn: Callable[[], object], per_call: int) -> tuple[float, list[float]]:
        """Images/s and each call's time; this process's CPU per image goes to ``cpu_per_image[name]``."""
        fn()  # warm-up
        times: list[float] = []
        start, cpu0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds or len(times) < 3:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        cpu_per_image[name] = (time.process_time() - cpu0) / (per_call * len(times))
        return per_call * len(times) / sum(times), times

    def parallel_rate(name: str, images: np.ndarray) -> float:
        per_s, cpu_per_image[name] = sessions_rate(sessions, images, seconds)
        return per_s

    table: dict[str, float] = {}
    one_session: dict[str, float] = {}
    for batch in batches:
        images = np.stack([squares[i % len(squares)] for i in range(batch)])
        if workers == 1:
            per_s, _ = rate(str(batch), lambda images=images: model.predict(images), batch)  # type: ignore[misc]
        else:
            per_s = parallel_rate(str(batch), images)
        table[str(batch)] = round(per_s, 1)
        log(
            f"  in-process ORT batch {batch:3d}, {workers} x {threads} threads: {per_s:8.1f} images/s, "
            f"{cpu_per_image[str(batch)] * 1e3:.2f} ms CPU per image"
        )
        if whole is not None:
            key = f"one_session_{batch}"
            one, _ = rate(key, lambda images=images: whole.predict(images), batch)  # type: ignore[misc]
            one_session[str(batch)] = round(one, 1)
            log(
                f"  in-process ORT batch {batch:3d}, 1 x {threads * workers} threads: {one:8.1f} images/s, "
                f"{cpu_per_image[key] * 1e3:.2f} ms CPU per image"
            )
    best = max(table, key=lambda b: table[b])
    best_one = max(one_session, key=lambda b: one_session[b]) if one_session else None
    limit_per_s, limit_batch, limit_layout = table[best], best, f"{workers}x{threads}"
    if best_one is not None and one_session[best_one] > limit_per_s:
        limit_per_s, limit_batch, limit_layout = one_session[best_one], best_one, f"1x{threads * workers}"
        cpu_per_image[best_one] = cpu_per_image[f"one_session_{best_one}"]

    _, single = rate("single", lambda: model.predict(squares[0][None]), 1)
    count = 0

    def decode_one() -> None:
        nonlocal count
        decode_image(inputs[count % len(inputs)], size, 40_000_000)
        count += 1

    _, decodes = rate("decode", decode_one, 1)

    def decode_photo() -> None:
        nonlocal count
        decode_image(photos[count % len(photos)], size, 40_000_000)
        count += 1

    _, photo_decodes = rate("decode_photo", decode_photo, 1)

    def decode_and_predict() -> None:
        nonlocal count
        model.predict(decode_image(inputs[count % len(inputs)], size, 40_000_000)[None])
        count += 1

    e2e_per_s, both = rate("decode_and_infer", decode_and_predict, 1)
    return {
        "inprocess_limit_per_s": limit_per_s,
        "inprocess_limit_batch": int(limit_batch),
        "inprocess_limit_layout": limit_layout,  # sessions x threads that gave the limit
        "inprocess_by_batch": table,
        "inprocess_one_session_by_batch": one_session,
        "single_inference_inprocess_ms": ms(statistics.median(single)),
        "decode_inprocess_ms": ms(statistics.median(decodes)),
        "decode_photo_inprocess_ms": ms(statistics.median(photo_decodes)),
        "single_decode_and_inference_inprocess_ms": ms(statistics.median(both)),
        "inprocess_decode_and_infer_per_s": round(e2e_per_s, 1),
        "inprocess_cpu_ms_per_image": {k: ms(v) for k, v in cpu_per_image.items()},
    }


# ---------------------------------------------------------------------------------------------------------------
# load generation


@dataclass
class LoadResult:
    requests: int = 0
    images: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    machine_busy: float = 0.0  # share of all cores busy during the window (everything on the machine)
    machine_cores: int = field(default_factory=lambda: psutil.cpu_count() or 1)
    late_s: float = 0.0  # open loop: how far behind schedule the generator launched its requests (p99)
    late_max_s: float = 0.0
    process_cpu_s: list[float] = field(default_factory=list)  # each server process's CPU in the window

    def summary(self) -> dict[str, Any]:
        n = max(self.requests, 1)
        return {
            "per_s": round(self.images / self.seconds, 1) if self.seconds else 0.0,  # images/s
            "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": ms(percentile(self.latencies, 50)),
            "p99_ms": ms(percentile(self.latencies, 99)),
            "max_ms": ms(max(self.latencies, default=float("nan"))),
            "server_cpu_ms_per_req": ms(self.server_cpu_s / n),
            "client_cpu_ms_per_req": ms(self.client_cpu_s / n),
            "server_process_cpu_s": [round(v, 2) for v in self.process_cpu_s if v >= 0.005],
            "client_cpu_share": round(self.client_cpu_s / (self.client_cpu_s + self.server_cpu_s), 3)
            if self.client_cpu_s + self.server_cpu_s
            else 0.0,
            "machine_busy": round(self.machine_busy, 3),
            # Cores' worth of CPU used by neither the client nor the server (other work on the machine).
            "other_cores": round(
                max(
                    0.0,
                    self.machine_busy * self.machine_cores
                    - (self.client_cpu_s + self.server_cpu_s) / self.seconds,
                ),
                2,
            )
            if self.seconds
            else 0.0,
        }


# What an answer's body holds for a verdict and for a refused item: its key, quoted.
LABEL_KEY, ERROR_KEY = f'"{LABEL}"'.encode(), f'"{ERROR}"'.encode()


def _ok(response: Response, expect: bytes) -> bool:
    """A 200 whose body holds ``expect`` (a verdict's ``"label"``, or the ``"error"`` of a refused item)."""
    return response.status == 200 and expect in response.body


def raw_requests(server: Server, bodies: Sequence[Body]) -> list[bytes]:
    """Each body as a whole ``POST /classify`` request to ``server``, encoded once."""
    return [encode_post(server.host, CLASSIFY_PATH, body.content, body.headers) for body in bodies]


def _busy(times: Any) -> float:
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class Window:
    """CPU counters around the measured window: this process (the client), the server's tree, the machine."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __enter__(self) -> Window:
        self.t0 = time.perf_counter()
        self.client0 = time.process_time()
        self.by_process0 = self.server.cpu_by_process()
        self.server0 = sum(self.by_process0.values())
        self.machine0 = psutil.cpu_times()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.client_cpu = time.process_time() - self.client0
        by_process = self.server.cpu_by_process()
        self.server_cpu = sum(by_process.values()) - self.server0
        # Each server process's share, busiest first: how evenly the work spread over the tier's workers.
        self.process_cpu = sorted(
            (by_process[pid] - self.by_process0.get(pid, 0.0) for pid in by_process), reverse=True
        )
        m0, m1 = self.machine0, psutil.cpu_times()
        total = sum(m1) - sum(m0)
        self.machine_busy = (_busy(m1) - _busy(m0)) / total if total > 0 else 0.0


async def closed_loop(
    server: Server,
    bodies: Sequence[Body],
    concurrency: int,
    warmup: float,
    seconds: float,
    expect: bytes = LABEL_KEY,
) -> LoadResult:
    """``concurrency`` workers, each with its own connection, each sending its next request when the last one is
    answered."""
    requests = raw_requests(server, bodies)
    result = LoadResult()
    measuring = False
    stop = False
    # One at a time, each with a first (uncounted) request: a burst of connects is accepted by whichever worker
    # process wakes first, which may take them all (seen: 16 connections on one of two workers, half the
    # throughput); opened one by one they spread over the workers, as a client's pool grows in practice.
    connections = []
    for _ in range(concurrency):
        connection = await Connection.open(server.hostname, server.port)
        with contextlib.suppress(HTTPError, OSError):
            await connection.request(requests[0])
        connections.append(connection)

    async def worker(index: int) -> None:
        connection = connections[index]
        i = index
        while not stop:
            body, raw = bodies[i % len(bodies)], requests[i % len(bodies)]
            i += concurrency
            t0 = time.perf_counter()
            try:
                if connection.closed:  # the server closed it (an error answer): go on with a new one
                    connection = await Connection.open(server.hostname, server.port)
                    connections.append(connection)
                ok = _ok(await connection.request(raw), expect)
            except (HTTPError, OSError):
                ok = False
            if measuring and not stop:
                result.requests += 1
                result.images += body.images
                if ok:
                    result.latencies.append(time.perf_counter() - t0)
                else:
                    result.errors += 1

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup)
    measuring = True
    with Window(server) as window:
        await asyncio.sleep(seconds)
        stop = True
    await asyncio.gather(*tasks)
    for connection in connections:
        connection.close()
    result.seconds = window.seconds
    result.client_cpu_s, result.server_cpu_s, result.machine_busy = (
        window.client_cpu,
        window.server_cpu,
        window.machine_busy,
    )
    result.process_cpu_s = window.process_cpu
    return result


async def open_loop(
    pool: Pool,
    server: Server,
    bodies: Sequence[Body],
    rate: float,
    warmup: float,
    seconds: float,
) -> LoadResult:
    """Requests launched at a constant rate whatever the answers do; latency counts from the scheduled launch time
    (a generator that fell behind does not hide the queueing it caused)."""
    requests = raw_requests(server, bodies)
    result = LoadResult()
    lateness: list[float] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(index: int, scheduled: float, counted: bool) -> None:
        body = bodies[index]
        try:
            ok = _ok(await pool.request(requests[index]), LABEL_KEY)
        except (HTTPError, OSError):
            ok = False
        if counted:
            result.requests += 1
            result.images += body.images
            if ok:
                result.latencies.append(time.perf_counter() - scheduled)
            else:
                result.errors += 1

    interval = 1.0 / rate
    total = int((warmup + seconds) * rate)
    first_counted = int(warmup * rate)
    start = time.perf_counter() + 0.01
    window: Window | None = None
    for i in range(total):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if i == first_counted:
            window = Window(server).__enter__()
        if i >= first_counted:
            lateness.append(max(0.0, time.perf_counter() - scheduled))
        task = asyncio.create_task(one(i % len(bodies), scheduled, i >= first_counted))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    assert window is not None
    window.__exit__()
    # The rate actually offered: requests counted over the time their launches spanned.
    result.seconds = (total - first_counted) * interval
    result.client_cpu_s, result.server_cpu_s, result.machine_busy = (
        window.client_cpu,
        window.server_cpu,
        window.machine_busy,
    )
    result.process_cpu_s = window.process_cpu
    result.late_s = percentile(lateness, 99)
    result.late_max_s = max(lateness, default=0.0)
    return result


def run_async(main: Callable[[], Any]) -> Any:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    except ImportError:
        return asyncio.run(main())


def load_section(
    tier: Server, naive: Server, bodies: Sequence[Body], preset: dict[str, Any]
) -> dict[str, Any]:
    levels: Sequence[int] = preset["levels"]
    warmup, seconds = float(preset["warmup"]), float(preset["seconds"])
    results: dict[str, dict[str, Any]] = {"tier": {}, "naive": {}}

    async def closed() -> None:
        for server in (tier, naive):  # warm both up
            connection = await Connection.open(server.hostname, server.port)
            for raw in raw_requests(server, bodies):
                await connection.request(raw)
            connection.close()
        for level in levels:  # interleaved, so drift on a shared machine hits both alike
            for server in (tier, naive):
                got = await closed_loop(server, bodies, level, warmup, seconds)
                row = got.summary()
                results[server.name][str(level)] = row
                log(
                    f"  {server.name:5s} c={level:3d}: {row['per_s']:7.1f} images/s  p50 {row['p50_ms']:7.1f} ms"
                    f"  p99 {row['p99_ms']:7.1f} ms  server {row['server_cpu_ms_per_req']:.2f} ms CPU/req"
                    f"  client {row['client_cpu_ms_per_req']:.2f}  errors {row['errors']}"
                    f"  CPU s by process {row['server_process_cpu_s']}"
                )

    run_async(closed)
    return results


def tier_extras_section(
    tier: Server, inputs: Sequence[bytes], photos: Sequence[bytes], preset: dict[str, Any]
) -> dict[str, Any]:
    """Where the tier's time goes, closed loop at one level: requests of several images each (the per-request cost
    shared), requests whose one file is refused at its header check (the per-request cost alone: HTTP, BentoML,
    the multipart form, one thread hop and the JSON answer; no decode, no model), and the photo itself instead of
    its model input (what decoding and letterboxing a JPEG costs the tier)."""
    level, per_request = int(preset["extras_concurrency"]), int(preset["multi_images"])
    warmup, seconds = float(preset["warmup"]), float(preset["extras_seconds"])
    multi = multipart_bodies(inputs, per_request)
    junk = multipart_bodies([os.urandom(len(p)) for p in inputs])
    whole = multipart_bodies(photos)
    out: dict[str, Any] = {}

    async def go() -> None:
        for name, bodies, expect in (
            ("multi_image", multi, LABEL_KEY),
            ("refused_item", junk, ERROR_KEY),
            ("photo_input", whole, LABEL_KEY),
        ):
            row = (await closed_loop(tier, bodies, level, warmup, seconds, expect)).summary()
            row.update(concurrency=level, images_per_request=bodies[0].images)
            out[name] = row
            log(
                f"  tier c={level} {name} ({bodies[0].images}/request): {row['per_s']:.1f} images/s, "
                f"{row['requests_per_s']:.1f} requests/s, server {row['server_cpu_ms_per_req']:.2f} ms CPU/req, "
                f"errors {row['errors']}"
            )

    run_async(go)
    return out


def half_load_section(
    tier: Server, bodies: Sequence[Body], rate: float, preset: dict[str, Any]
) -> dict[str, Any]:
    async def go() -> LoadResult:
        pool = Pool(tier.hostname, tier.port)
        await pool.prefill(OPEN_LOOP_CONNECTIONS, raw_requests(tier, bodies[:1])[0])
        try:
            return await open_loop(
                pool, tier, bodies, rate, float(preset["warmup"]), float(preset["half_seconds"])
            )
        finally:
            pool.close()

    got: LoadResult = run_async(go)
    row = got.summary()
    row["offered_per_s"] = round(rate, 1)
    row["generator_late_p99_ms"] = ms(got.late_s)
    row["generator_late_max_ms"] = ms(got.late_max_s)
    # A stall shows as a run of slow answers: how many took over 5x the median.
    row["over_5x_median"] = (
        sum(v > 5 * statistics.median(got.latencies) for v in got.latencies) if got.latencies else 0
    )
    log(
        f"  tier at {rate:.0f} req/s (open loop): p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
        f"errors {row['errors']}, generator late p99 {row['generator_late_p99_ms']:.1f} ms"
    )
    return row


# ---------------------------------------------------------------------------------------------------------------
# report


def machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    return {
        "machine_cores": os.cpu_count(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "",
        f"{'concurrency':>11} | {'tier img/s':>10} {'p50 ms':>8} {'p99 ms':>8} | {'naive img/s':>11} {'p50 ms':>8}"
        f" {'p99 ms':>8} | {'tier/naive':>10}",
    ]
    for level, row in results["tier_by_concurrency"].items():
        other = results["naive_by_concurrency"][level]
        ratio = row["per_s"] / other["per_s"] if other["per_s"] else float("nan")
        lines.append(
            f"{level:>11} | {row['per_s']:>10.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} | "
            f"{other['per_s']:>11.1f} {other['p50_ms']:>8.1f} {other['p99_ms']:>8.1f} | {ratio:>10.2f}"
        )
    lines += [
        f"in-process limit (sessions x ORT threads {results['inprocess_limit_layout']}, "
        f"batch {results['inprocess_limit_batch']}; tier: {results['tier_workers']} worker(s) x "
        f"{results['ort_threads']} threads): "
        f"{results['inprocess_limit_per_s']:.1f} images/s; with decode, one at a time: "
        f"{results['inprocess_decode_and_infer_per_s']:.1f}",
        f"tier peak {results['tier_peak_per_s']:.1f} ({results['tier_vs_inprocess']:.2f} of the limit), naive peak "
        f"{results['naive_peak_per_s']:.1f} (tier {results['tier_vs_naive']:.2f}x)",
        f"single inference: {results['single_inference_ms']:.2f} ms end-to-end (tier, c=1), "
        f"{results['single_inference_inprocess_ms']:.2f} ms ORT in-process; "
        f"p99 at half the peak ({results['half_load']['offered_per_s']:.0f} req/s): "
        f"{results['p99_half_load_ms']:.1f} ms ({results['p99_half_vs_single']:.2f}x)",
        f"targets: {results['targets']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run (about 38-40 s; limit 45 s)")
    parser.add_argument("--levels", help="comma-separated concurrency levels (closed loop)")
    parser.add_argument("--seconds", type=float, help="measured seconds per level")
    parser.add_argument("--half-seconds", type=float, help="measured seconds of the half-load run")
    parser.add_argument(
        "--threads", type=int, help="ORT threads per tier worker; default: the tier's own sizing"
    )
    parser.add_argument("--workers", type=int, help="the tier's worker processes; default: its own sizing")
    args = parser.parse_args(argv)
    preset = dict(QUICK if args.quick else FULL)
    if args.levels:
        preset["levels"] = tuple(int(v) for v in args.levels.split(","))
    if args.seconds:
        preset["seconds"] = args.seconds
    if args.half_seconds:
        preset["half_seconds"] = args.half_seconds

    from pzone_model.runtime import available_cpus, cgroup_cpu_limit, ort_threads, serving_workers
    from pzone_model.settings import Settings as TierSettings

    # The tier's own sizing (cgroup quota, affinity, PZONE_MODEL_WORKERS, PZONE_ORT_THREADS), passed to it
    # explicitly so that the tier and the limit use the same.
    tier_settings, limit, cpus = TierSettings(), cgroup_cpu_limit(), available_cpus()
    workers = args.workers or serving_workers(limit, cpus, tier_settings.model_workers)
    threads = args.threads or ort_threads(limit, cpus, tier_settings.ort_threads, workers)

    started = time.perf_counter()
    results: dict[str, Any] = {"quick": bool(args.quick), "arch": ARCH, "image_size": IMAGE_SIZE}
    with tempfile.TemporaryDirectory(prefix="pzone-bench-serving-") as tmp:
        workdir = Path(tmp)
        log(
            f"model: {ARCH} at {IMAGE_SIZE} px (untrained), exported to ONNX and imported into a private store"
        )
        prepared = prepare_model(workdir)
        photos = render_photos(int(preset["photos"]))
        # What the web front sends for each photo (pzone_api.model_tier_client.classify_photos).
        inputs = [model_input_bmp(io.BytesIO(photo), IMAGE_SIZE) for photo in photos]
        bodies = multipart_bodies(inputs)
        results["photo_kb"] = round(statistics.mean(len(p) for p in photos) / 1e3, 1)
        results["input_kb"] = round(statistics.mean(len(p) for p in inputs) / 1e3, 1)
        log(
            f"{len(photos)} photos at {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, {results['photo_kb']} kB each on average; "
            f"sent as {IMAGE_SIZE} px BMP squares of {results['input_kb']} kB (the web front's model input)"
        )
        log("starting the tier (bentoml serve) and the naive service (uvicorn + torch)")
        with servers(prepared, threads, workers, workdir) as (tier, naive):
            log(f"in-process ONNX Runtime, {workers} session(s) of {threads} threads")
            results.update(
                inprocess_section(
                    prepared,
                    inputs,
                    photos,
                    threads,
                    workers,
                    preset["batches"],
                    float(preset["inprocess_seconds"]),
                    bool(preset["one_session"]),
                )
            )
            # The tier gets them as PZONE_MODEL_WORKERS and PZONE_ORT_THREADS, which its sizing uses as given.
            results["ort_threads"] = threads
            results["tier_ort_threads"] = threads
            results["tier_workers"] = workers
            results["inprocess_ort_threads"] = threads
            log("closed loop, one photo per request (its model input)")
            by_level = load_section(tier, naive, bodies, preset)
            results["tier_by_concurrency"] = by_level["tier"]
            results["naive_by_concurrency"] = by_level["naive"]
            tier_best = max(by_level["tier"], key=lambda k: by_level["tier"][k]["per_s"])
            naive_best = max(by_level["naive"], key=lambda k: by_level["naive"][k]["per_s"])
            results["tier_peak_per_s"] = by_level["tier"][tier_best]["per_s"]
            results["tier_peak_concurrency"] = int(tier_best)
            results["naive_peak_per_s"] = by_level["naive"][naive_best]["per_s"]
            results["naive_peak_concurrency"] = int(naive_best)
            single = by_level["tier"].get("1") or by_level["tier"][min(by_level["tier"], key=int)]
            results["single_inference_ms"] = single["p50_ms"]
            results["naive_single_inference_ms"] = (
                by_level["naive"].get("1") or by_level["naive"][min(by_level["naive"], key=int)]
            )["p50_ms"]
            log("the tier's per-request cost")
            extras = tier_extras_section(tier, inputs, photos, preset)
            results["tier_multi_image"] = extras["multi_image"]
            results["tier_refused_item"] = extras["refused_item"]
            results["tier_photo_input"] = extras["photo_input"]
            log("open loop at half the tier's peak")
            half = half_load_section(tier, bodies, results["tier_peak_per_s"] / 2, preset)
            results["half_load"] = half
            results["p50_half_load_ms"] = half["p50_ms"]
            results["p99_half_load_ms"] = half["p99_ms"]
            log("in-process ONNX Runtime again, the limit's layout and batch")
            after = limit_again(prepared, inputs, results, float(preset["inprocess_seconds"]))
            before = results["inprocess_limit_per_s"]
            results["inprocess_limit_before_per_s"], results["inprocess_limit_after_per_s"] = before, after
            # The tier ran between the two: their mean is the limit at the time of its runs.
            results["inprocess_limit_per_s"] = round((before + after) / 2, 1)
            log(f"  before the tier's runs {before:.1f} images/s, after {after:.1f}")
    results["naive_torch_threads"] = threads * workers
    results["tier_vs_inprocess"] = round(results["tier_peak_per_s"] / results["inprocess_limit_per_s"], 3)
    # Like for like: the same per-image work (decode + one ORT call) done one at a time in this process.
    results["tier_vs_inprocess_decode_and_infer"] = round(
        results["tier_peak_per_s"] / results["inprocess_decode_and_infer_per_s"], 3
    )
    results["tier_vs_naive"] = round(results["tier_peak_per_s"] / results["naive_peak_per_s"], 3)
    results["p99_half_vs_single"] = round(results["p99_half_load_ms"] / results["single_inference_ms"], 3)
    results["p99_half_vs_single_inprocess"] = round(
        results["p99_half_load_ms"] / results["single_inference_inprocess_ms"], 3
    )
    # Where a photo's CPU goes (ms per image; the machine has `machine_cores` of them for everything).
    peak = results["tier_by_concurrency"][str(results["tier_peak_concurrency"])]
    naive_peak = results["naive_by_concurrency"][str(results["naive_peak_concurrency"])]
    limit_cpu = results["inprocess_cpu_ms_per_image"][str(results["inprocess_limit_batch"])]
    results["cpu_ms_per_image"] = {
        "inprocess_ort": limit_cpu,
        "decode": results["inprocess_cpu_ms_per_image"]["decode"],
        "decode_photo": results["inprocess_cpu_ms_per_image"]["decode_photo"],
        "tier_server_photo_input": results["tier_photo_input"]["server_cpu_ms_per_req"],
        "tier_server": peak["server_cpu_ms_per_req"],
        "tier_request_without_decode_or_model": results["tier_refused_item"]["server_cpu_ms_per_req"],
        "tier_server_multi_image": round(
            results["tier_multi_image"]["server_cpu_ms_per_req"]
            / results["tier_multi_image"]["images_per_request"],
            2,
        ),
        "client_at_tier_peak": peak["client_cpu_ms_per_req"],
        "naive_server": naive_peak["server_cpu_ms_per_req"],
    }
    results["targets"] = {
        "tier_70pct_of_inprocess": results["tier_vs_inprocess"] >= TARGET_TIER_VS_INPROCESS,
        "tier_3x_naive": results["tier_vs_naive"] >= TARGET_TIER_VS_NAIVE,
        "p99_half_load_within_3x_single": results["p99_half_vs_single"] <= TARGET_P99_VS_SINGLE,
    }
    results.update(machine())
    results["wall_s"] = round(time.perf_counter() - started, 1)
    log(table(results))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
