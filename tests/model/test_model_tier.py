"""The model tier (serving/model): CPU sizing, image decoding, POST /classify through BentoML's ASGI app (good and
bad items, batch limits, probes), the hot swap under concurrent requests, and a real `bentoml serve` of the built
Bento answering the API's model tier client and retrain's rollout wait."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from pzone_model.runtime import (
    BadImage,
    cgroup_cpu_limit,
    decode_image,
    fit_batch,
    model_version,
    ort_threads,
    serving_workers,
)
from tests.support.bentoml_store import fresh_store
from tests.support.paths import REPO
from tests.support.tiny_model import TierProcess, import_tiny, jpeg, png

UPRIGHT, FALLEN = (5.0, 0.0, 0.0), (0.0, 0.0, 5.0)


# --- CPU sizing ---------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_limit(tmp_path: Path, files: dict[str, str], expected: float | None) -> None:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    assert cgroup_cpu_limit(tmp_path) == expected


@pytest.mark.unit
def test_ort_threads_follow_the_quota_not_the_host() -> None:
    assert ort_threads(2.0, 64) == 2  # a 2-core container on a 64-core host
    assert ort_threads(1.5, 64) == 2  # rounded up: the half core is still usable
    assert ort_threads(0.5, 64) == 1
    assert ort_threads(8.0, 4) == 4  # affinity caps it
    assert ort_threads(None, 6) == 6
    assert ort_threads(None, 0) == 1
    assert ort_threads(2.0, 64, configured=3) == 3  # PZONE_ORT_THREADS wins


@pytest.mark.unit
def test_workers_one_per_core_of_the_budget_and_threads_shared_among_them() -> None:
    assert serving_workers(2.0, 64) == 2  # a 2-core container: 2 processes ...
    assert ort_threads(2.0, 64, workers=2) == 1  # ... of 1 ORT thread each
    assert serving_workers(1.5, 64) == 2 and serving_workers(0.5, 64) == 1
    assert serving_workers(None, 16) == 4  # at most 4 processes (memory) ...
    assert ort_threads(None, 16, workers=4) == 4  # ... the other cores go to their threads
    assert ort_threads(None, 6, workers=4) == 1  # never 0
    assert serving_workers(2.0, 64, configured=1) == 1  # PZONE_MODEL_WORKERS wins
    assert ort_threads(2.0, 64, workers=1) == 2
    assert ort_threads(2.0, 64, configured=3, workers=2) == 3  # PZONE_ORT_THREADS wins


@pytest.mark.unit
def test_classify_is_left_out_of_tracing_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenTelemetry's ASGI middleware costs /classify about half its per-request CPU with nothing sampled."""
    from opentelemetry.util.http import ExcludeList

    from pzone_model.service import PZoneTilt, tracing_config

    monkeypatch.delenv("PZONE_MODEL_TRACE_CLASSIFY", raising=False)
    config = tracing_config()
    excluded = ExcludeList(config["excluded_urls"].split(","))
    assert excluded.url_disabled("http://127.0.0.1:3000/classify")
    for traced in ("/predict_batch", "/readyz", "/livez", "/metrics"):
        assert not excluded.url_disabled(f"http://127.0.0.1:3000{traced}"), traced
    assert PZoneTilt.config["tracing"] == config  # the service is declared with it
    monkeypatch.setenv("PZONE_MODEL_TRACE_CLASSIFY", "true")
    assert tracing_config() == {}


@pytest.mark.unit
def test_a_worker_forgets_the_serving_gauge_of_dead_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    import prometheus_client  # noqa: F401  # imported first: it picks its mode from the variable set below

    from pzone_model.service import forget_dead_workers

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid, live_pid = int(gone.stdout), os.getpid()
    for pid in (dead_pid, live_pid):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"")  # counters keep counting after their process
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    forget_dead_workers()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"gauge_livesum_{live_pid}.db", f"counter_{dead_pid}.db"]
    )
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    forget_dead_workers()  # single-process mode: nothing to do, no error


# --- images -------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_decode_is_the_training_preprocessing() -> None:
    from pzone.preprocess import load_square
    from pzone_training.data import letterbox

    data = jpeg((64, 48))
    got = decode_image(data, 32, 40_000_000)
    assert got.shape == (32, 32, 3) and got.dtype == np.uint8
    assert np.array_equal(got, load_square(io.BytesIO(data), 32))
    # The same letterbox as the training's data module (PNG: no JPEG draft scaling involved).
    picture = png((50, 30))
    with Image.open(io.BytesIO(picture)) as image:
        assert np.array_equal(decode_image(picture, 24, 10**6), letterbox(image, 24))


@pytest.mark.unit
def test_decode_applies_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display: a wide photo stands up
    image = Image.new("RGB", (64, 32), (200, 200, 200))
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    square = decode_image(out.getvalue(), 32, 10**6)
    # Upright after rotation: the content fills the height and leaves black bars left and right.
    assert square[:, 0].max() < 30 and square[16, 16].min() > 150


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "code"),
    [(b"", "empty"), (b"not an image at all", "not_an_image"), (jpeg()[:200], "not_an_image")],
)
def test_decode_refuses_bad_bytes(data: bytes, code: str) -> None:
    with pytest.raises(BadImage) as info:
        decode_image(data, 32, 10**6)
    assert info.value.code == code


@pytest.mark.unit
def test_decode_refuses_a_bomb_from_its_header() -> None:
    bomb = png((2000, 2000))  # 4 Mpx, tiny file
    with pytest.raises(BadImage) as info:
        decode_image(bomb, 32, max_pixels=1_000_000)
    assert info.value.code == "too_many_pixels"


@pytest.mark.unit
def test_fit_batch_resizes_squares_of_another_size() -> None:
    batch = fit_batch([np.zeros((32, 32, 3), np.uint8), np.full((48, 48, 3), 7, np.uint8)], 32)
    assert batch.shape == (2, 32, 32, 3) and batch[1].min() == 7
    assert fit_batch([], 16).shape == (0, 16, 16, 3)


@pytest.mark.unit
def test_model_version_prefers_the_registry_version() -> None:
    assert model_version("pzone-tilt", "abc", {"mlflow_version": "7"}) == "pzone-tilt/7"
    assert model_version("pzone-tilt", "abc", {}) == "pzone-tilt:abc"


# --- the service through its ASGI app --------------------------------------------------------------------------
# One app and one client for the module: BentoML registers its HTTP metrics once per process and binds its batcher
# to the first event loop. The tests below run in file order on one store: v1 (upright) first, the swap last.


@dataclass
class Tier:
    client: Any
    service: Any
    workdir: Path


@pytest.fixture(scope="module")
def tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tier]:
    import bentoml
    from starlette.testclient import TestClient

    workdir = tmp_path_factory.mktemp("tier")
    fresh_store()
    import_tiny(workdir, UPRIGHT, "1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PZONE_MODEL_WATCH_INTERVAL_S", "0.2")
        mp.setenv("PZONE_MAX_BATCH_IMAGES", "4")
        mp.setenv("PZONE_MAX_IMAGE_BYTES", "200000")
        mp.setenv("PZONE_IMAGE_MAX_PIXELS", "1000000")
        from pzone_model.service import PZoneTilt

        with TestClient(PZoneTilt.to_asgi()) as client:
            yield Tier(client, bentoml.get_current_service(), workdir)


def _files(*items: tuple[str, bytes, str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", item) for item in items]


@pytest.mark.integration
def test_classify_answers_each_image_in_order(tier: Tier) -> None:
    response = tier.client.post(
        "/classify",
        files=_files(
            ("a.jpg", jpeg(), "image/jpeg"), ("b.png", png(), "image/png"), ("c.jpg", jpeg(), "image/jpeg")
        ),
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3
    for item in results:
        assert item["label"] == "upright" and item["model_version"] == "pzone-tilt/1"
        assert item["image_size"] == 32  # the model's input side: what a client's squares should measure
        assert set(item["probs"]) == {"upright", "tilted", "fallen"}
        assert abs(sum(item["probs"].values()) - 1) < 1e-5
    assert tier.client.get("/readyz").status_code == 200
    assert tier.client.get("/livez").status_code == 200


@pytest.mark.integration
def test_bad_items_get_their_own_error_and_the_rest_is_answered(tier: Tier) -> None:
    response = tier.client.post(
        "/classify",
        files=_files(
            ("ok.jpg", jpeg(), "image/jpeg"),
            ("text.jpg", b"hello", "image/jpeg"),
            ("bomb.png", png((1500, 1000)), "image/png"),
            ("huge.jpg", b"\xff" * 300_000, "image/jpeg"),
        ),
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["label"] == "upright"
    codes = [r.get("error", {}).get("code") for r in results[1:]]
    assert codes == ["not_an_image", "too_many_pixels", "too_large"]
    assert all(r["error"]["reason"] for r in results[1:])

    # A text field named `images` (e.g. a URL) is a bad item, never fetched.
    response = tier.client.post(
        "/classify",
        data={"images": "http://169.254.169.254/"},
        files=_files(("a.jpg", jpeg(), "image/jpeg")),
    )
    results = response.json()["results"]
    assert sorted(str(r.get("error", {}).get("code")) for r in results) == ["None", "not_a_file"]


@pytest.mark.integration
def test_model_inputs_photos_and_bad_items_in_one_request(tier: Tier) -> None:
    """Model inputs are decoded on the event loop, the rest in a thread: the answers still come in file order."""
    from pzone.preprocess import model_input_bmp

    square = model_input_bmp(io.BytesIO(jpeg((64, 48))), 32)
    other_side = model_input_bmp(io.BytesIO(jpeg((64, 48))), 96)  # made for another model: letterboxed again
    response = tier.client.post(
        "/classify",
        files=_files(
            ("a.bmp", square, "image/bmp"),
            ("b.jpg", jpeg(), "image/jpeg"),
            ("c.bmp", square[:100], "image/bmp"),
            ("d.bmp", other_side, "image/bmp"),
        ),
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r.get("label") for r in results] == ["upright", "upright", None, "upright"]
    assert results[2]["error"]["code"] == "not_an_image"
    # Only squares: no thread hop at all, and the answers are the same.
    only = tier.client.post(
        "/classify", files=_files(("a.bmp", square, "image/bmp"), ("b", b"x", "image/bmp"))
    )
    assert [r.get("label") for r in only.json()["results"]] == ["upright", None]
    assert only.json()["results"][0]["probs"] == pytest.approx(results[0]["probs"])


@pytest.mark.unit
def test_the_batcher_caps_its_batches_and_never_splits_a_request() -> None:
    import asyncio

    from pzone_model.service import Batcher

    calls: list[int] = []
    release = threading.Event()

    def run(images: list[np.ndarray]) -> list[dict[str, Any]]:
        calls.append(len(images))
        if len(calls) == 1:
            release.wait(5)  # the first call runs while every other request queues
        return [{"n": int(img[0, 0, 0])} for img in images]

    async def go() -> list[list[dict[str, Any]]]:
        batcher = Batcher(run, max_size=3)

        def request(first: int, count: int) -> list[np.ndarray]:
            return [np.full((2, 2, 3), first + i, np.uint8) for i in range(count)]

        sizes = [1, 1, 1, 1, 5, 1, 2]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        tasks = [asyncio.create_task(batcher.submit(request(0, 1)))]
        await asyncio.sleep(0.1)  # the first one is running (and held): the others queue behind it
        tasks += [
            asyncio.create_task(batcher.submit(request(s, n)))
            for s, n in zip(starts[1:], sizes[1:], strict=True)
        ]
        await asyncio.sleep(0.1)
        release.set()
        return await asyncio.gather(*tasks)

    answers = asyncio.run(go())
    # Idle: the first goes at once; then up to 3 images per call in arrival order; the 5-image request alone.
    assert calls == [1, 3, 5, 3]
    # Every request got its own images' answers back, in order.
    assert [[a["n"] for a in answer] for answer in answers] == [
        [0],
        [1],
        [2],
        [3],
        [4, 5, 6, 7, 8],
        [9],
        [10, 11],
    ]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "ok"), [("1", True), ("8", True), ("64", True), ("0", False), ("65", False)]
)
def test_the_batch_cap_setting_is_bounded(monkeypatch: pytest.MonkeyPatch, value: str, ok: bool) -> None:
    from pydantic import ValidationError

    from pzone_model.settings import Settings as TierSettings

    monkeypatch.setenv("PZONE_MODEL_BATCH_IMAGES", value)
    if ok:
        assert TierSettings().model_batch_images == int(value)
    else:
        with pytest.raises(ValidationError):
            TierSettings()


@pytest.mark.integration
def test_whole_request_errors(tier: Tier) -> None:
    empty = tier.client.post("/classify", files={"other": ("x.jpg", jpeg(), "image/jpeg")})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_batch"
    over = tier.client.post(
        "/classify", files=_files(*[(f"{i}.jpg", jpeg(), "image/jpeg") for i in range(5)])
    )
    assert over.status_code == 413 and over.json()["error"]["code"] == "too_many_images"
    as_json = tier.client.post("/classify", json={"images": []})
    assert as_json.status_code == 415 and as_json.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.integration
def test_a_broken_import_leaves_the_model_in_use(tier: Tier) -> None:
    import bentoml

    from pzone_training.bento import import_model
    from tests.support.tiny_model import META

    # Broken before it is in the store: a good import damaged afterwards could be swapped in by the watcher first.
    broken = tier.workdir / "broken.onnx"
    broken.write_bytes(b"garbage")
    tag = import_model(broken, {**META, "image_size": 32}, {"mlflow_version": "2"}).tag
    with pytest.raises(Exception):  # noqa: B017 - ONNX Runtime's own error type
        tier.service.refresh()
    time.sleep(0.5)  # the watcher tries too, and fails the same way
    response = tier.client.post("/classify", files=_files(("a.jpg", jpeg(), "image/jpeg")))
    assert response.json()["results"][0]["model_version"] == "pzone-tilt/1"
    bentoml.models.delete(tag)  # `latest` falls back to v1


@pytest.mark.integration
@pytest.mark.slow
def test_hot_swap_fails_no_request(tier: Tier) -> None:
    """The watcher picks up a new import while clients keep asking: every answer is 200 and from one model."""
    answers: list[tuple[int, list[tuple[str, str]]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                r = tier.client.post(
                    "/classify", files=_files(("a.jpg", jpeg(), "image/jpeg"), ("b.png", png(), "image/png"))
                )
                items = [(i["label"], i["model_version"]) for i in r.json()["results"]]
                answers.append((r.status_code, items))
            except BaseException as exc:  # any failure is the test's failure
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        import_tiny(tier.workdir, FALLEN, "3")  # what the package stage does: `latest` moves
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and tier.service.model.version != "pzone-tilt/3":
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    assert not errors, errors[:3]
    assert answers and all(status == 200 for status, _ in answers)
    seen = {pair for _, items in answers for pair in items}
    # Label and version always agree: each batch is answered by one whole model.
    assert seen == {("upright", "pzone-tilt/1"), ("fallen", "pzone-tilt/3")}
    assert answers[-1][1] == [("fallen", "pzone-tilt/3")] * 2


# --- a real server ----------------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The package stage's Bento, served: BentoML imports the service from the Bento's own copy of the sources
    (its source folders go ahead of the workspace's on the path), so a file the tier needs and the Bento lacks
    fails here.

    The model is imported and the Bento built in a process of their own, with a store of their own, as the package
    stage does: a build imports the service, whose model reference would otherwise stay bound to this process's
    store, and the module's in-process tier above follows that store."""
    home = tmp_path / "bentoml"
    build = "import sys; from pathlib import Path; from pzone_training.bento import build_bento; "
    build += "from tests.support.tiny_model import import_tiny; "
    build += f"tag = import_tiny(Path(sys.argv[2]), {FALLEN}, '3'); "
    build += "print(build_bento(Path(sys.argv[1]), tag)[0])"
    built = subprocess.run(
        [sys.executable, "-c", build, str(REPO), str(tmp_path)],
        env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    bento_tag = built.stdout.strip().splitlines()[-1]
    tier = TierProcess(home, tmp_path / "tier.log", target=bento_tag)
    tier.env["PZONE_MODEL_WORKERS"] = "2"
    tier.start()
    try:
        yield tier.url
    finally:
        tier.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_the_served_bento_answers_the_api_client_and_the_rollout_wait(served: str) -> None:
    from pzone_api.model_tier_client import classify
    from pzone_api.settings import Settings as ApiSettings

    assert httpx.get(f"{served}/readyz", timeout=5).status_code == 200
    response = httpx.post(
        f"{served}/classify",
        files=_files(("a.jpg", jpeg(), "image/jpeg"), ("x", b"zz", "text/plain")),
        timeout=30,
    )
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first["label"] == "fallen" and first["model_version"] == "pzone-tilt/3"
    assert second["error"]["code"] == "not_an_image"

    verdicts = classify(ApiSettings(model_tier_url=served, model_tier_timeout_s=30), [jpeg(), png()])
    assert verdicts is not None and len(verdicts) == 2
    assert all(v is not None and v.label == "fallen" and v.model_version == "pzone-tilt/3" for v in verdicts)

    metrics = httpx.get(f"{served}/metrics", timeout=10).text
    assert 'pzone_model_predictions_total{label="fallen",model_version="pzone-tilt/3"}' in metrics
    from pzone_pipelines.retrain import served_version
    from pzone_pipelines.retrain import serving_workers as workers_by_version

    assert served_version(served) == "pzone-tilt/3"
    deadline = time.monotonic() + 60  # the second worker process may still be starting
    while workers_by_version(served) != {"pzone-tilt/3": 2.0} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers_by_version(served) == {
        "pzone-tilt/3": 2.0
    }  # both worker processes (PZONE_MODEL_WORKERS=2)
