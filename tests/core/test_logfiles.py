"""The log files PZONE_LOG_DIR makes (pzone.logfiles): which names are active or rotated logs, the active file's
name, and rotation that never overwrites a file."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pzone import logfiles
from pzone.logfiles import LogKind


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("api.log", LogKind.ACTIVE),
        ("api-pod.x.log", LogKind.ACTIVE),
        ("api.log.2026-11-25_16", LogKind.ROTATED),
        ("api.log.2026-11-25_16.1", LogKind.ROTATED),
        ("api.log.1.gz", LogKind.ROTATED),
        ("api.log.1.log", LogKind.ACTIVE),  # ends in .log exactly: someone may write it
        ("api.log.", LogKind.OTHER),
        (".log", LogKind.OTHER),
        (".api.log.1", LogKind.OTHER),  # hidden (temp files)
        ("notes.txt", LogKind.OTHER),
        ("catalog.txt", LogKind.OTHER),
    ],
)
def test_log_kind(name: str, kind: LogKind) -> None:
    assert logfiles.log_kind(name) is kind


@pytest.fixture
def file_logging() -> Iterator[None]:
    yield
    logfiles.remove_file_logging()


@pytest.mark.unit
def test_rotating_log_files_never_overwrite_and_rotate_on_close(tmp_path: Path, file_logging: None) -> None:
    active = logfiles.install_file_logging(tmp_path / "logs", "api", "INFO")
    assert active.name == logfiles.active_log_name("api")
    assert logfiles.log_kind(active.name) is LogKind.ACTIVE
    logger = logging.getLogger("pzone.test.logbackup")
    logger.setLevel(logging.INFO)
    logger.info("first hour")
    assert "first hour" in active.read_text()
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, logfiles.RotatingLogHandler)]
    handler.doRollover()
    logger.info("same hour, second file")
    handler.doRollover()  # the same interval's name again: gets ".1", nothing is overwritten
    logger.info("after the last rollover")
    hour = time.strftime("%Y-%m-%d_%H", time.gmtime(handler.rolloverAt - handler.interval))
    logfiles.remove_file_logging()  # what logging.shutdown() does at exit: the active file is rotated too
    assert not active.exists()
    hourly = [f"{active.name}.{hour}", f"{active.name}.{hour}.1"]
    (closing,) = {p.name for p in active.parent.iterdir()} - set(hourly)
    assert re.fullmatch(re.escape(active.name) + r"\.\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", closing)
    names = [*hourly, closing]
    assert all(logfiles.log_kind(n) is LogKind.ROTATED for n in names)
    texts = [(active.parent / n).read_text() for n in names]
    assert [t.split(": ", 1)[1].strip() for t in texts] == [
        "first hour",
        "same hour, second file",
        "after the last rollover",
    ]
    assert "INFO pzone.test.logbackup" in texts[0]


@pytest.mark.unit
def test_active_log_name_says_the_job_and_a_safe_host() -> None:
    assert logfiles.active_log_name("photos", "pzone-api-7d9f.x") == "photos-pzone-api-7d9f.x.log"
    assert logfiles.active_log_name("api", "weird host!") == "api-weird-host-.log"
