"""The board's TLS files (``mqtt.ssl_params``): CA, and the device certificate and key for AWS IoT Core.

``hal_micropython`` imports ``machine`` and ``network``, which exist only on the board: empty stand-ins are put in
``sys.modules`` (and MicroPython's tick functions on ``time``) for the import; the functions under test touch neither.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.unit


@pytest.fixture
def board(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("machine", "network"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    for name in ("ticks_ms", "ticks_diff", "ticks_add", "sleep_ms"):  # MicroPython's time has these
        monkeypatch.setattr(time, name, lambda *args: 0, raising=False)
    monkeypatch.delitem(sys.modules, "pzone_firmware.hal_micropython", raising=False)
    return importlib.import_module("pzone_firmware.hal_micropython")


def test_ssl_files_are_read_as_bytes_and_other_params_pass_through(board: Any, tmp_path: Path) -> None:
    for name, data in (("ca.der", b"\x30ca"), ("dev.crt.der", b"\x30crt"), ("dev.key.der", b"\x30key")):
        (tmp_path / name).write_bytes(data)
    params = board._load_ssl_params(
        {
            "server_hostname": "abc-ats.iot.eu-west-1.amazonaws.com",
            "ca_file": str(tmp_path / "ca.der"),
            "cert_file": str(tmp_path / "dev.crt.der"),
            "key_file": str(tmp_path / "dev.key.der"),
        }
    )
    assert params == {
        "server_hostname": "abc-ats.iot.eu-west-1.amazonaws.com",
        "cadata": b"\x30ca",
        "cert": b"\x30crt",
        "key": b"\x30key",
    }
    assert board._load_ssl_params({"server_hostname": "h"}) == {"server_hostname": "h"}


def test_a_certificate_without_its_key_is_refused(board: Any, tmp_path: Path) -> None:
    (tmp_path / "dev.crt.der").write_bytes(b"\x30")
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        board._load_ssl_params({"cert_file": str(tmp_path / "dev.crt.der")})
    with pytest.raises(
        OSError
    ):  # a named file that is not on the board fails loudly, not silently without TLS
        board._load_ssl_params({"key_file": str(tmp_path / "missing.der"), "cert_file": str(tmp_path / "x")})


def test_the_ssl_context_loads_the_client_certificate(board: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """umqtt.simple >= 1.4 takes an SSLContext: the client certificate must be loaded into it."""
    calls: list[tuple[str, Any]] = []

    class Context:
        verify_mode = None

        def __init__(self, protocol: Any) -> None:
            calls.append(("context", protocol))

        def load_cert_chain(self, cert: bytes, key: bytes) -> None:
            calls.append(("cert_chain", (cert, key)))

        def load_verify_locations(self, cadata: bytes) -> None:
            calls.append(("ca", cadata))

    fake_ssl = types.SimpleNamespace(
        SSLContext=Context, PROTOCOL_TLS_CLIENT="client", CERT_REQUIRED="required", CERT_NONE="none"
    )
    monkeypatch.setitem(sys.modules, "ssl", fake_ssl)
    ctx = board._ssl_context({"cert": b"c", "key": b"k", "cadata": b"ca"})
    assert ("cert_chain", (b"c", b"k")) in calls and ("ca", b"ca") in calls
    assert ctx.verify_mode == "required"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the Git checkout")
def test_the_boards_credentials_are_git_ignored_and_the_tracked_files_stay_tracked() -> None:
    """config.json and the DER/PEM files next to it (``ca_file``, ``cert_file``, ``key_file``) never reach Git."""
    secret = [
        "config.json",
        "ca.der",
        "scooter-0001.crt.der",
        "scooter-0001.key.der",
        "scooter-0001.cert.pem",  # as `aws iot create-keys-and-certificate` writes them (docs/deploy-aws.md)
        "scooter-0001.key.pem",
        "device.key",
        "device.crt",
        "certs/device.key.der",
    ]
    paths = [f"firmware/device/{name}" for name in secret]
    # --no-index: the patterns alone decide, whether or not such a file exists or was committed by mistake
    ignored = _git("check-ignore", "--no-index", *paths)
    assert ignored.returncode == 0, ignored.stderr
    assert set(ignored.stdout.split()) == set(paths)
    tracked = _git("ls-files", "firmware/device").stdout.split()
    assert "firmware/device/config.example.json" in tracked
    not_ignored = _git("check-ignore", "--no-index", *tracked)
    assert not_ignored.returncode == 1, f"tracked files matched by .gitignore: {not_ignored.stdout}"
