"""The DVC remote: a local folder by default, S3 when configured (here: the moto S3 server over HTTP)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.support.paths import REPO
from tests.support.s3 import MotoServer

DVC = [sys.executable, "-m", "dvc"]


def dvc(cwd: Path, *args: str) -> str:
    done = subprocess.run([*DVC, *args], cwd=cwd, capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.integration
def test_repository_default_remote_is_a_local_folder() -> None:
    out = dvc(REPO, "remote", "list")
    name, url = out.split()[:2]
    assert name == "local" and Path(url) == REPO / ".pzone" / "dvc-remote"
    assert "(default)" in out


@pytest.mark.integration
def test_push_and_pull_through_an_s3_remote(s3_server: MotoServer, tmp_path: Path) -> None:
    boto3.client("s3", endpoint_url=s3_server.endpoint_url).create_bucket(Bucket="pzone-dvc")
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    dvc(project, "init", "--no-scm", "-q")
    (project / "data" / "snapshot.json").write_text('{"images": 3}\n')
    (project / "data" / "img.bin").write_bytes(os.urandom(200_000))
    dvc(project, "add", "data")
    # the same commands the docs give for an S3 remote (per-machine settings go to the local config)
    dvc(project, "remote", "add", "-d", "--local", "s3", "s3://pzone-dvc/store")
    dvc(project, "remote", "modify", "--local", "s3", "endpointurl", s3_server.endpoint_url)
    dvc(project, "push")
    listed = boto3.client("s3", endpoint_url=s3_server.endpoint_url).list_objects_v2(Bucket="pzone-dvc")
    assert listed["KeyCount"] >= 3  # two files and the directory listing

    original = (project / "data" / "img.bin").read_bytes()
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    dvc(project, "pull")
    assert (project / "data" / "img.bin").read_bytes() == original
