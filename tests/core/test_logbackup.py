"""`pzone logs backup` (pzone.logbackup): rotated log files to S3 (moto's real HTTP server), verified before delete;
end to end with the log files PZONE_LOG_DIR makes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, NoCredentialsError
from typer.testing import CliRunner

from pzone import logbackup, logfiles
from pzone.cli import app as cli_app
from pzone.logbackup import LogFile, Outcome
from pzone.logfiles import LogKind
from tests.support.paths import REPO
from tests.support.s3 import MotoServer

BUCKET = "pzone-logs"
HOST = "node-a"
HOUR_AGO = time.time() - 3600

# Under the source folder: two old rotated files (one nested), an active one, a fresh rotated one, a non-log.
OLD_ROTATED = {
    "api-pod1.log.2026-11-25_15": b"15:00 api started\n15:59 api request\n",
    "worker/photos-pod1.log.2026-11-25_14.1": b"14:00 photo stored\n" * 50,
}
ACTIVE = "api-pod1.log"
YOUNG_ROTATED = "api-pod1.log.2026-11-25_16"
NOT_A_LOG = "notes.txt"


def write(path: Path, data: bytes, mtime: float | None = HOUR_AGO) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def make_logs(source: Path) -> Path:
    for name, data in OLD_ROTATED.items():
        write(source / name, data)
    write(source / ACTIVE, b"16:05 still writing\n")
    write(source / YOUNG_ROTATED, b"16:00 just rotated\n", mtime=None)
    write(source / NOT_A_LOG, b"not a log\n")
    return source


def keys(client: Any, bucket: str = BUCKET) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def body(client: Any, key: str) -> bytes:
    data: bytes = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


def expected_key(name: str) -> str:
    return f"logs/{HOST}/{name}"


@pytest.fixture
def s3(s3_server: MotoServer) -> Any:
    """The project's S3 client on the moto server, with the log bucket."""
    client = logbackup.s3_client(s3_server.endpoint_url, "us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def backup(client: Any, source: Path, **options: Any) -> logbackup.BackupReport:
    options.setdefault("host", HOST)
    return logbackup.backup_logs(client, options.pop("bucket", BUCKET), source, **options)


# ---------------------------------------------------------------------------------------------------------------
# pure parts


@pytest.mark.unit
def test_select_logs_takes_old_rotated_files_only() -> None:
    now = 10_000.0

    def f(path: str, age: float) -> LogFile:
        return LogFile(PurePosixPath(path), 10, now - age)

    files = [
        f("b/api.log.2026-11-25_15", 3600),
        f("api.log.2026-11-25_14", 61),
        f("api.log.2026-11-25_16", 59),  # younger than min_age_s
        f("skewed.log.1", -5),  # modified "in the future": too young
        f("api.log", 3600),
        f("notes.txt", 3600),
    ]
    chosen = logbackup.select_logs(files, now=now, min_age_s=60)
    assert [x.path.as_posix() for x in chosen.upload] == ["api.log.2026-11-25_14", "b/api.log.2026-11-25_15"]
    assert [x.path.as_posix() for x in chosen.active] == ["api.log"]
    assert [x.path.as_posix() for x in chosen.too_young] == ["api.log.2026-11-25_16", "skewed.log.1"]
    assert [x.path.as_posix() for x in chosen.other] == ["notes.txt"]
    with_active = logbackup.select_logs(files, now=now, min_age_s=60, include_active=True)
    assert "api.log" in [x.path.as_posix() for x in with_active.upload] and not with_active.active
    assert len(logbackup.select_logs(files, now=now, min_age_s=0).upload) == 3  # skew stays too young


@pytest.mark.unit
def test_keys_prefixes_and_host_labels() -> None:
    assert logbackup.normalize_prefix("logs") == "logs/"
    assert logbackup.normalize_prefix("/logs/prod/") == "logs/prod/"
    assert logbackup.normalize_prefix("") == ""
    path = PurePosixPath("worker/api.log.1")
    assert logbackup.object_key("logs/", "pod-1", path) == "logs/pod-1/worker/api.log.1"
    assert logbackup.object_key("", "pod-1", path) == "pod-1/worker/api.log.1"
    with pytest.raises(ValueError):
        logbackup.object_key("logs/", "pod-1", PurePosixPath("with space.log.1"))
    with pytest.raises(ValueError):
        logbackup.normalize_prefix("../up")
    with pytest.raises(logbackup.BackupError, match="--host-label"):
        logbackup.check_host_label("bad host")


@pytest.mark.unit
def test_remote_comparison_and_verification() -> None:
    data = b"some log lines\n"
    sha, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
    ours = {"ContentLength": len(data), "Metadata": {"sha256": sha}, "ETag": '"x-2"'}
    assert logbackup.matches_remote(ours, len(data), sha, md5)
    assert not logbackup.matches_remote(None, len(data), sha, md5)
    assert not logbackup.matches_remote({**ours, "ContentLength": 1}, len(data), sha, md5)
    assert not logbackup.matches_remote({**ours, "Metadata": {"sha256": "0" * 64}}, len(data), sha, md5)
    # Stored by something else, without our metadata: a single-part ETag is the MD5; a multipart one is not.
    assert logbackup.matches_remote({"ContentLength": len(data), "ETag": f'"{md5}"'}, len(data), sha, md5)
    assert not logbackup.matches_remote(
        {"ContentLength": len(data), "ETag": f'"{md5}-1"'}, len(data), sha, md5
    )

    assert logbackup.verification_problem(ours, len(data), sha, single_put=False) is None
    assert "missing" in str(logbackup.verification_problem(None, len(data), sha, single_put=True))
    assert "bytes" in str(
        logbackup.verification_problem({**ours, "ContentLength": 3}, len(data), sha, single_put=True)
    )
    assert "sha256" in str(
        logbackup.verification_problem({**ours, "Metadata": {}}, len(data), sha, single_put=True)
    )
    bad_checksum = {**ours, "ChecksumSHA256": "AAAA"}
    assert "checksum" in str(logbackup.verification_problem(bad_checksum, len(data), sha, single_put=True))
    assert logbackup.verification_problem(bad_checksum, len(data), sha, single_put=False) is None


@pytest.mark.unit
def test_s3_errors_become_messages_a_person_can_act_on() -> None:
    def client_error(code: str, operation: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "x"}}, operation)

    assert "does not exist" in logbackup.describe_s3_error(client_error("404", "HeadBucket"), "b")
    assert "does not exist" in logbackup.describe_s3_error(client_error("NoSuchBucket", "PutObject"), "b")
    for code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
        assert "denied" in logbackup.describe_s3_error(client_error(code, "HeadBucket"), "b")
    assert "region" in logbackup.describe_s3_error(client_error("301", "HeadBucket"), "b")
    assert "no AWS credentials" in logbackup.describe_s3_error(NoCredentialsError(), "b")


# ---------------------------------------------------------------------------------------------------------------
# against S3


@pytest.mark.integration
def test_uploads_rotated_files_idempotently_and_again_when_changed(s3: Any, tmp_path: Path) -> None:
    source = make_logs(tmp_path / "logs")
    first = backup(s3, source)
    assert (first.uploaded, first.skipped, first.deleted, first.failed) == (2, 0, 0, 0)
    assert keys(s3) == {expected_key(name) for name in OLD_ROTATED}
    for name, data in OLD_ROTATED.items():
        assert body(s3, expected_key(name)) == data
        head = s3.head_object(Bucket=BUCKET, Key=expected_key(name))
        assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (len(first.selection.active), len(first.selection.too_young), len(first.selection.other)) == (
        1,
        1,
        1,
    )
    assert all((source / name).exists() for name in [*OLD_ROTATED, ACTIVE, YOUNG_ROTATED, NOT_A_LOG])

    second = backup(s3, source)
    assert (second.uploaded, second.skipped, second.failed) == (0, 2, 0)
    assert "0 uploaded, 2 skipped" in second.summary()

    changed = "api-pod1.log.2026-11-25_15"
    write(source / changed, OLD_ROTATED[changed] + b"16:00 a late line\n")
    third = backup(s3, source)
    assert [(r.file.path.as_posix(), r.outcome) for r in third.results] == [
        (changed, Outcome.UPLOADED),
        ("worker/photos-pod1.log.2026-11-25_14.1", Outcome.SKIPPED),
    ]
    assert body(s3, expected_key(changed)).endswith(b"a late line\n")  # the same key, written anew


@pytest.mark.integration
def test_delete_uploaded_deletes_verified_rotated_files_only(s3: Any, tmp_path: Path) -> None:
    source = make_logs(tmp_path / "logs")
    # One file is in S3 already, stored by something else (no sha256 metadata): its single-part ETag is the MD5.
    legacy = "worker/photos-pod1.log.2026-11-25_14.1"
    s3.put_object(Bucket=BUCKET, Key=expected_key(legacy), Body=OLD_ROTATED[legacy])
    report = backup(s3, source, delete_uploaded=True, include_active=True, min_age_s=60)
    outcomes = {r.file.path.as_posix(): (r.outcome, r.deleted) for r in report.results}
    assert outcomes == {
        ACTIVE: (Outcome.UPLOADED, False),  # uploaded with --include-active, never deleted
        "api-pod1.log.2026-11-25_15": (Outcome.UPLOADED, True),
        legacy: (Outcome.SKIPPED, True),
    }
    assert sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()) == [
        ACTIVE,
        YOUNG_ROTATED,
        NOT_A_LOG,
    ]
    for name, data in OLD_ROTATED.items():
        assert body(s3, expected_key(name)) == data


@pytest.mark.integration
def test_a_copy_that_fails_verification_is_not_deleted(
    s3: Any, s3_server: MotoServer, tmp_path: Path
) -> None:
    source = tmp_path / "logs"
    write(source / "api.log.1", b"precious lines\n")
    write(source / "api.log.2", b"other lines\n")
    # Someone (a broken proxy, another writer) replaces the object between our PUT and our check.
    other = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    put_keys: list[str] = []

    def remember(params: dict[str, Any], **_: Any) -> None:
        put_keys.append(params["Key"])

    def tamper(**_: Any) -> None:
        if put_keys[-1] == expected_key("api.log.1"):
            other.put_object(Bucket=BUCKET, Key=put_keys[-1], Body=b"precious lineZ\n")  # same size

    s3.meta.events.register("provide-client-params.s3.PutObject", remember)
    s3.meta.events.register("after-call.s3.PutObject", tamper)
    report = backup(s3, source, delete_uploaded=True)
    results = {r.file.path.as_posix(): r for r in report.results}
    assert results["api.log.1"].outcome is Outcome.FAILED and not results["api.log.1"].deleted
    assert "not verified" in results["api.log.1"].detail and "sha256" in results["api.log.1"].detail
    assert results["api.log.2"].outcome is Outcome.UPLOADED and results["api.log.2"].deleted
    assert (source / "api.log.1").read_bytes() == b"precious lines\n"
    assert not (source / "api.log.2").exists()
    assert (report.uploaded, report.deleted, report.failed) == (1, 1, 1)


@pytest.mark.integration
def test_upload_failures_delete_nothing(s3: Any, tmp_path: Path) -> None:
    source = make_logs(tmp_path / "logs")
    report = backup(s3, source, bucket="pzone-gone", delete_uploaded=True)  # e.g. deleted after the check
    assert (report.uploaded, report.deleted, report.failed) == (0, 0, 2)
    assert all("does not exist" in r.detail for r in report.results)
    assert all((source / name).exists() for name in OLD_ROTATED)


@pytest.mark.integration
def test_large_files_go_multipart_and_compare_by_sha256(s3: Any, tmp_path: Path) -> None:
    source = tmp_path / "logs"
    data = os.urandom(6 * 1024 * 1024 + 17)
    write(source / "big.log.1", data)
    threshold = 5 * 1024 * 1024
    first = backup(s3, source, multipart_threshold=threshold)
    assert (first.uploaded, first.failed) == (1, 0)
    head = s3.head_object(Bucket=BUCKET, Key=expected_key("big.log.1"))
    assert "-" in head["ETag"]  # not an MD5: only the sha256 metadata can say "same bytes"
    assert body(s3, expected_key("big.log.1")) == data
    second = backup(s3, source, multipart_threshold=threshold, delete_uploaded=True)
    assert (second.uploaded, second.skipped, second.deleted) == (0, 1, 1)
    assert not (source / "big.log.1").exists()


@pytest.mark.integration
def test_dry_run_changes_nothing(s3: Any, tmp_path: Path) -> None:
    source = make_logs(tmp_path / "logs")
    report = backup(s3, source, delete_uploaded=True, dry_run=True)
    assert (report.uploaded, report.deleted, report.failed) == (2, 2, 0)
    assert report.summary().startswith("dry run: 2 would be uploaded")
    assert keys(s3) == set()
    assert all((source / name).exists() for name in OLD_ROTATED)


# ---------------------------------------------------------------------------------------------------------------
# the command


def invoke(args: list[str], env: dict[str, str | None]) -> Any:
    base: dict[str, str | None] = {"PZONE_LOG_DIR": None, "PZONE_LOG_HOST_LABEL": None, "COLUMNS": "200"}
    return CliRunner().invoke(cli_app, ["logs", "backup", *args], env={**base, **env})


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.integration
def test_cli_backup_and_its_errors(
    s3_server: MotoServer, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_logs(tmp_path / "logs")
    env: dict[str, str | None] = {
        "PZONE_S3_BUCKET": BUCKET,
        "PZONE_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "PZONE_S3_REGION": "us-east-1",
    }
    before = sorted(p.name for p in source.rglob("*"))

    missing = invoke(["--source", str(tmp_path / "nope")], env)
    assert missing.exit_code == 2 and "does not exist" in flat(missing.output)
    not_dir = invoke(["--source", str(source / NOT_A_LOG)], env)
    assert not_dir.exit_code == 2 and "is not a folder" in flat(not_dir.output)
    no_bucket = invoke(["--source", str(source)], {**env, "PZONE_S3_BUCKET": None})
    assert no_bucket.exit_code == 2 and "no bucket" in flat(no_bucket.output)
    wrong = invoke(["--source", str(source), "--bucket", "pzone-nope", "--delete-uploaded"], env)
    assert wrong.exit_code == 2 and "bucket 'pzone-nope' does not exist" in flat(wrong.output)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps the credentials it found first
    no_credentials = invoke(
        ["--source", str(source), "--delete-uploaded"],
        {
            **env,
            "AWS_ACCESS_KEY_ID": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
    assert no_credentials.exit_code == 2 and "no AWS credentials" in flat(no_credentials.output)
    assert sorted(p.name for p in source.rglob("*")) == before and keys(s3) == set()

    dry = invoke(["--source", str(source), "--host-label", HOST, "--dry-run", "--delete-uploaded"], env)
    assert dry.exit_code == 0, dry.output
    assert "dry run: 2 would be uploaded" in flat(dry.output) and keys(s3) == set()

    done = invoke(["--source", str(source), "--host-label", HOST, "--delete-uploaded"], env)
    assert done.exit_code == 0, done.output
    out = flat(done.output)
    assert "2 uploaded, 0 skipped (already in S3), 2 deleted, 0 failed" in out
    assert f"s3://{BUCKET}/logs/{HOST}/" in out and "1 active, 1 too recent, 1 not logs" in out
    assert keys(s3) == {expected_key(name) for name in OLD_ROTATED}
    assert not any((source / name).exists() for name in OLD_ROTATED)

    write(source / "api.log.3", b"new\n")
    kept = invoke(["--source", str(source), "--host-label", HOST, "--prefix", "", "--keep"], env)
    assert kept.exit_code == 0 and keys(s3) >= {f"{HOST}/api.log.3"} and (source / "api.log.3").exists()


@pytest.mark.integration
def test_cli_exit_code_1_when_a_file_fails(s3_server: MotoServer, s3: Any, tmp_path: Path) -> None:
    source = tmp_path / "logs"
    write(source / "api.log.1", b"fine\n")
    write(source / "bad name.log.1", b"no key for this name\n")
    env: dict[str, str | None] = {"PZONE_S3_BUCKET": BUCKET, "PZONE_S3_ENDPOINT_URL": s3_server.endpoint_url}
    result = invoke(["--source", str(source), "--host-label", HOST, "--delete-uploaded"], env)
    assert result.exit_code == 1, result.output
    assert "1 uploaded" in flat(result.output) and "1 failed" in flat(result.output)
    assert (source / "bad name.log.1").exists() and not (source / "api.log.1").exists()


@pytest.mark.integration
def test_log_dir_files_are_written_rotated_on_exit_and_shipped(
    s3_server: MotoServer, s3: Any, tmp_path: Path
) -> None:
    """A real process: PZONE_LOG_DIR gets its log file; at exit it is rotated; the next backup ships it."""
    log_dir = tmp_path / "var-log-pzone"
    env = {
        **os.environ,
        "PZONE_LOG_DIR": str(log_dir),
        "PZONE_LOG_LEVEL": "INFO",
        "PZONE_S3_BUCKET": BUCKET,
        "PZONE_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "PZONE_LOG_HOST_LABEL": HOST,
        "COLUMNS": "200",
    }
    command = [sys.executable, "-m", "pzone.cli", "logs", "backup", "--min-age-s", "0", "--delete-uploaded"]
    first = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "0 uploaded" in flat(first.stdout)  # its own log file was active while it ran
    active = logfiles.active_log_name("logs")
    (rotated,) = list(log_dir.iterdir())
    assert rotated.name.startswith(active + ".") and logfiles.log_kind(rotated.name) is LogKind.ROTATED
    assert "INFO pzone.logbackup" in rotated.read_text() and "logs backup: 0 uploaded" in rotated.read_text()

    second = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 uploaded" in flat(second.stdout)
    assert keys(s3) == {expected_key(rotated.name)}
    assert b"logs backup: 0 uploaded" in body(s3, expected_key(rotated.name))
    (left,) = list(log_dir.iterdir())  # the second run's own log, rotated on exit; the first one is deleted
    assert logfiles.log_kind(left.name) is LogKind.ROTATED and "logs backup: 1 uploaded" in left.read_text()
