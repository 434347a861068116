"""The ingest Lambda's cold start: importing the handler from its zip, with and without precompiled bytecode.

Lambda unpacks the zip into a read-only /var/task, so Python cannot write the bytecode it compiles: without
``__pycache__`` in the zip, every cold start compiles every module (SQLAlchemy, pydantic, botocore, psycopg...)
again. ``ingest_lambda/build_zip.py`` therefore ships unchecked-hash bytecode. This measures what that buys:

1. build the zip once with ``build_zip.build`` (the real build);
2. unpack it twice: as built, and with every ``__pycache__`` removed (a zip of sources only);
3. alternate fresh interpreters (``python -I``-like: an empty environment, ``PYTHONDONTWRITEBYTECODE=1`` standing in
   for the read-only file system, only the unpacked folder on ``PYTHONPATH``) timing ``import
   pzone_ingest.handler``, the work a cold start does before the first event (the database connection excluded).

    uv run python benchmarks/lambda_cold_start.py --quick   # ~25 s (limit 45 s)
    uv run python benchmarks/lambda_cold_start.py           # more rounds

The last line on stdout is one JSON object: ``import_ms_with_bytecode``, ``import_ms_without_bytecode`` (medians),
``speedup``, ``zip_mb``, ``rounds``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import time; t = time.perf_counter(); import pzone_ingest.handler; "
    "print((time.perf_counter() - t) * 1000)"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_build_zip() -> Any:
    spec = importlib.util.spec_from_file_location("build_zip", ROOT / "ingest_lambda" / "build_zip.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_zip"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def base_python() -> str:
    """The interpreter without this project's virtual environment (Lambda has none)."""
    return str(Path(getattr(sys, "_base_executable", sys.executable)))


def cold_import_ms(python: str, folder: Path) -> float:
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(folder)}
    done = subprocess.run(
        [python, "-c", PROBE], env=env, cwd=folder, capture_output=True, text=True, timeout=60, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds (default 15)")
    parser.add_argument("--rounds", type=int, help="interpreter starts per variant")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    build_zip = load_build_zip()
    python = base_python()
    with tempfile.TemporaryDirectory(prefix="pzone-coldstart-") as tmp:
        work = Path(tmp)
        log("building the Lambda zip (ingest_lambda/build_zip.py) ...")
        built = build_zip.build(work / "lambda.zip", "3.11", "x86_64-manylinux2014")
        folders = {"with_bytecode": work / "with", "without_bytecode": work / "without"}
        for folder in folders.values():
            with zipfile.ZipFile(built.zip) as zf:
                zf.extractall(folder)
        for cache in folders["without_bytecode"].rglob("__pycache__"):
            shutil.rmtree(cache)
        times: dict[str, list[float]] = {name: [] for name in folders}
        for index in range(rounds):  # alternating, so that load on the machine hits both alike
            for name, folder in folders.items():
                times[name].append(cold_import_ms(python, folder))
            log(f"round {index + 1}/{rounds}: " + ", ".join(f"{n} {t[-1]:.0f} ms" for n, t in times.items()))
    with_ms = statistics.median(times["with_bytecode"])
    without_ms = statistics.median(times["without_bytecode"])
    result = {
        "import_ms_with_bytecode": round(with_ms, 1),
        "import_ms_without_bytecode": round(without_ms, 1),
        "speedup": round(without_ms / with_ms, 2),
        "zip_mb": round(built.size / 1e6, 1),
        "unzipped_mb": round(built.unzipped / 1e6, 1),
        "rounds": rounds,
        "python": python,
    }
    log(
        f"cold import of pzone_ingest.handler: {with_ms:.0f} ms with bytecode, {without_ms:.0f} ms without "
        f"({result['speedup']}x); zip {result['zip_mb']} MB"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
