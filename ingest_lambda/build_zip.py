#!/usr/bin/env python3
"""Build the ingest Lambda's deployment zip: ``pzone-ingest`` plus ``pzone-core``'s base install, nothing else.

    python3 ingest_lambda/build_zip.py                       # -> dist/pzone-ingest-lambda.zip
    python3 ingest_lambda/build_zip.py --output /tmp/x.zip

Standard library only (plus the ``uv`` command): it runs before, and without, any project extras.

1. ``uv export --package pzone-ingest --frozen --no-dev --no-emit-workspace``: the third-party requirements of the
   two packages' base installs, pinned (with hashes) from ``uv.lock``. No extras, so no typer, amqtt, paho, torch.
2. ``uv pip install --target`` them as binary wheels for the Lambda platform (Amazon Linux 2, x86_64: manylinux2014,
   CPython 3.11), whatever machine builds the zip; psycopg comes with its ``psycopg-binary`` wheel (libpq inside).
3. The sources of ``pzone`` (core/src) and ``pzone_ingest`` (ingest_lambda/src) at the zip's root, so the handler is
   ``pzone_ingest.handler.handler``.
4. Bytecode compiled ahead (when this interpreter is the runtime's Python): Lambda's /var/task is read-only, so
   without it every cold start compiles every module again (about 1.3 s more here). Hash-checked-free
   (``unchecked-hash``) and recorded as /var/task paths, so the bytes depend on the sources alone.
5. A deterministic zip: entries sorted, fixed timestamps and modes, no ``bin/`` scripts.

Fails (exit 1) when a forbidden package (web framework, ML stack, CLI extras) ends up inside, or past Lambda's
250 MB unzipped limit. Prints the zip's path, size, entry count and SHA-256.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "dist" / "pzone-ingest-lambda.zip"
# The workspace packages' import packages and where their sources live.
SOURCES = {
    "pzone": ROOT / "core" / "src" / "pzone",
    "pzone_ingest": ROOT / "ingest_lambda" / "src" / "pzone_ingest",
}
# Distributions that must never reach the Lambda (normalized names, and the import names they install).
FORBIDDEN = ("torch", "fastapi", "starlette", "typer", "amqtt", "bentoml", "mlflow")
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
LAMBDA_TASK_ROOT = "/var/task"  # where Lambda unpacks the zip (the paths tracebacks show)
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
SKIP_SUFFIXES = (".pyc", ".pyo")


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Built:
    zip: Path
    size: int
    unzipped: int
    entries: int
    sha256: str
    packages: list[str]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")
    return proc.stdout


def export_requirements(dest: Path) -> list[str]:
    """Write the pinned requirements of the ingest package's base install; return their names."""
    _run(
        [
            "uv", "export", "--package", "pzone-ingest", "--frozen", "--no-dev", "--no-emit-workspace",
            "--no-header", "--no-annotate", "--format", "requirements.txt", "--output-file", str(dest),
        ]
    )  # fmt: skip
    names = []
    for line in dest.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.append(_normalize(match.group(1)))
    return names


def forbidden_in(names: list[str]) -> list[str]:
    wanted = {_normalize(f) for f in FORBIDDEN}
    return sorted({n.removeprefix("dist:") for n in names if n.removeprefix("dist:") in wanted})


def install(requirements: Path, target: Path, python_version: str, platform: str) -> None:
    _run(
        [
            "uv", "pip", "install", "--target", str(target), "--requirement", str(requirements),
            "--python-version", python_version, "--python-platform", platform,
            "--only-binary", ":all:", "--no-deps", "--require-hashes", "--quiet",
        ]
    )  # fmt: skip


def installed_names(site: Path) -> list[str]:
    """Distribution names (from ``*.dist-info``) and top-level import names in an install tree."""
    names = []
    for entry in site.iterdir():
        if entry.name.endswith(".dist-info"):
            names.append("dist:" + _normalize(entry.name[: -len(".dist-info")].rsplit("-", 1)[0]))
        else:
            names.append(_normalize(entry.name.removesuffix(".py")))
    return names


def copy_sources(site: Path) -> None:
    for name, src in SOURCES.items():
        if not (src / "__init__.py").is_file():
            raise BuildError(f"missing workspace package {name} at {src}")
        shutil.copytree(src, site / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))


def precompile(site: Path) -> None:
    """Bytecode for every module, reproducible: unchecked-hash pycs (no timestamps) naming /var/task paths."""
    ok = compileall.compile_dir(
        site,
        quiet=1,
        workers=0,
        stripdir=str(site),
        prependdir=LAMBDA_TASK_ROOT,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise BuildError("compiling the Lambda's modules failed")


def _files(site: Path, bytecode: bool = False) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(site):
        rel_dir = Path(dirpath).relative_to(site)
        # Bytecode only as precompile() made it; no console scripts (their shebangs name the build machine).
        dirnames[:] = [
            d
            for d in dirnames
            if (bytecode or d != "__pycache__") and not (rel_dir == Path(".") and d == "bin")
        ]
        for filename in filenames:
            if rel_dir == Path(".") and filename == ".lock":
                continue  # uv's lock file for the --target folder
            ours = bytecode and rel_dir.name == "__pycache__" and filename.endswith(".pyc")
            if ours or not filename.endswith(SKIP_SUFFIXES):
                found.append(Path(dirpath, filename).relative_to(site))
    return sorted(found, key=lambda p: p.as_posix())


def write_zip(site: Path, output: Path, bytecode: bool = False) -> tuple[int, int]:
    """A reproducible zip of ``site``; returns (entries, unzipped bytes)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    total = 0
    files = _files(site, bytecode)
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for rel in files:
            path = site / rel
            info = zipfile.ZipInfo(rel.as_posix(), date_time=ZIP_EPOCH)
            info.create_system = 3  # Unix, so that the mode below is honoured
            info.external_attr = 0o100644 << 16  # regular file, rw-r--r--
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            total += len(data)
            zf.writestr(info, data, compresslevel=9)
    partial.replace(output)
    return len(files), total


def build(output: Path, python_version: str, platform: str, keep: Path | None = None) -> Built:
    with tempfile.TemporaryDirectory(prefix="pzone-lambda-") as tmp:
        work = Path(tmp)
        requirements = work / "requirements.txt"
        names = export_requirements(requirements)
        bad = forbidden_in(names)
        if bad:
            raise BuildError(f"forbidden packages among the Lambda's requirements: {', '.join(bad)}")
        site = keep if keep is not None else work / "site"
        if site.exists() and any(site.iterdir()):
            raise BuildError(f"--keep-tree {site} is not empty")
        site.mkdir(parents=True, exist_ok=True)
        install(requirements, site, python_version, platform)
        copy_sources(site)
        installed = installed_names(site)
        bad = forbidden_in(installed)
        if bad:
            raise BuildError(f"forbidden packages ended up in the Lambda zip: {', '.join(bad)}")
        # Bytecode is version-specific: only this interpreter's own version can be compiled here.
        bytecode = python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
        if bytecode:
            for stale in site.rglob("__pycache__"):  # whatever an installer left: only ours go in
                shutil.rmtree(stale)
            precompile(site)
        else:
            print(
                f"build_zip: Python {python_version} is not this interpreter's: no bytecode", file=sys.stderr
            )
        entries, unzipped = write_zip(site, output, bytecode)
    if unzipped > LAMBDA_UNZIPPED_LIMIT:
        raise BuildError(f"unzipped size {unzipped} bytes exceeds Lambda's limit of {LAMBDA_UNZIPPED_LIMIT}")
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    dists = sorted(n.removeprefix("dist:") for n in installed if n.startswith("dist:"))
    return Built(output, output.stat().st_size, unzipped, entries, digest, dists)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="zip to write (%(default)s)")
    parser.add_argument(
        "--python-version", default="3.11", help="the Lambda runtime's Python (template: python3.11)"
    )
    parser.add_argument(
        "--platform",
        default="x86_64-manylinux2014",
        help="wheel platform for uv (x86_64-manylinux2014 = Amazon Linux 2, x86_64; aarch64-manylinux2014 for arm64)",
    )
    parser.add_argument(
        "--keep-tree", type=Path, help="also leave the unzipped tree in this (new or empty) folder"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("uv") is None:
        print("build_zip: the uv command is required (https://docs.astral.sh/uv/)", file=sys.stderr)
        return 1
    try:
        info = build(args.output.resolve(), args.python_version, args.platform, args.keep_tree)
    except BuildError as exc:
        print(f"build_zip: {exc}", file=sys.stderr)
        return 1
    print(
        f"{info.zip}: {info.size / 1e6:.1f} MB zipped ({info.size} bytes), {info.unzipped / 1e6:.1f} MB unzipped, "
        f"{info.entries} files, sha256 {info.sha256}"
    )
    print(f"packages: {', '.join(info.packages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
