"""Tiny models and the model tier as a process for the model tier's tests (no training, no torch needed); the
store they go into is the test session's (tests/support/bentoml_store.py) or a subprocess's own.

``tiny_onnx`` writes a model with the served graph's interface (uint8 (N, S, S, 3) → probs (N, 3)): the mean colour
through a linear layer; ``bias`` decides which class wins, so two models are easy to tell apart.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from pzone.tilt import TILT_CLASSES
from pzone_model import serve_command
from tests.support.paths import REPO
from tests.support.services import free_port

META: dict[str, Any] = {
    "classes": list(TILT_CLASSES),
    "image_size": 32,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


def tiny_onnx(path: Path, bias: Sequence[float], image_size: int = 32) -> Path:
    import onnx
    from onnx import TensorProto, helper

    weights = np.eye(3, dtype=np.float32) * 0.001
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
            helper.make_node("MatMul", ["mean", "w"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", image_size, image_size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
            helper.make_tensor("w", TensorProto.FLOAT, [3, 3], weights.flatten().tolist()),
            helper.make_tensor("b", TensorProto.FLOAT, [3], [float(v) for v in bias]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def import_tiny(workdir: Path, bias: Sequence[float], mlflow_version: str, image_size: int = 32) -> str:
    """A tiny model imported into this process's store as the package stage does; returns its tag."""
    from pzone_training.bento import import_model

    onnx_path = tiny_onnx(workdir / f"tiny-{mlflow_version}.onnx", bias, image_size)
    meta = {**META, "image_size": image_size}
    return import_model(onnx_path, meta, {"mlflow_version": mlflow_version}).tag


def jpeg(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (120, 60, 30), **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", quality=90, **save)
    return out.getvalue()


def png(size: tuple[int, int] = (40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(out, "PNG")
    return out.getvalue()


def wait_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float = 60.0, tail: Callable[[], str] = lambda: ""
) -> None:
    """Until the service answers ``/readyz`` with 200; fails at once, with its log tail, if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited ({process.returncode}): {tail()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready within {timeout}s: {tail()}")


class TierProcess:
    """``bentoml serve`` of the model tier on a fixed port, so that it can be stopped and started again.

    ``target``: the repository root as a BentoML project (bentofile.yaml: what ``uv run bentoml serve`` there
    serves), the service's import path (:data:`pzone_model.SERVICE`), or a built Bento's tag (served from the
    Bento's own source folder)."""

    def __init__(self, bentoml_home: Path, log: Path, target: str = str(REPO)) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            **os.environ,
            "BENTOML_HOME": str(bentoml_home),
            "BENTOML_DO_NOT_TRACK": "True",
            "PZONE_MODEL_WATCH_INTERVAL_S": "0",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*serve_command(self.target), "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_ready(self.url, self.process, timeout, self.tail)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None
        # Nothing may answer on the port any more (a worker left behind would).
        try:
            httpx.get(f"{self.url}/readyz", timeout=2)
        except httpx.ConnectError:
            return
        raise AssertionError(f"something still answers on port {self.port} after the model tier stopped")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
