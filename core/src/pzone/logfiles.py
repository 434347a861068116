"""Log files that every ``pzone`` process writes under ``PZONE_LOG_DIR``: their names and the rotating handler.

The files are shipped to S3 by ``pzone logs backup`` (:mod:`pzone.logbackup`).

**Names.** A process writes its *active* file ``<command>-<hostname>.log`` (``api-pzone-api-7d9f-x2k4q.log``) through
:class:`RotatingLogHandler`: hourly (UTC) the file is renamed to a *rotated* name, the active name plus the start of
the hour it covers (``api-pzone-api-7d9f-x2k4q.log.2026-11-25_16``), and a new active file begins. A process that
exits (SIGTERM included) rotates its file too, to the moment of closing (``….log.2026-11-25_16-42-07``), so a pod
that goes away leaves no active file behind and a restarted one never reuses a name. A rotated name that is taken
already gets ``.1``, ``.2``… appended: nothing is ever overwritten.

So: a file whose name ends in ``.log`` exactly is **active** (a writer may hold it); a file named ``<x>.log.<suffix>``
is **rotated** (closed for good, or compressed by an outside tool: ``.gz`` is fine); anything else (other names,
hidden files, symbolic links) is not a log and is left alone.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import socket
import time
from enum import StrEnum
from pathlib import Path

ACTIVE_SUFFIX = ".log"
CLOSING_SUFFIX = (
    "%Y-%m-%d_%H-%M-%S"  # rotation on close: the moment (UTC); hourly: the hour's start, %Y-%m-%d_%H
)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d %(threadName)s]: %(message)s"

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


# ---------------------------------------------------------------------------------------------------------------
# Names: active, rotated, other


class LogKind(StrEnum):
    ACTIVE = "active"
    ROTATED = "rotated"
    OTHER = "other"


def log_kind(name: str) -> LogKind:
    """``x.log`` is active, ``x.log.<suffix>`` rotated; hidden files and anything else are not logs."""
    if name.startswith("."):
        return LogKind.OTHER
    if name.endswith(ACTIVE_SUFFIX):
        return LogKind.ACTIVE if len(name) > len(ACTIVE_SUFFIX) else LogKind.OTHER
    head, sep, suffix = name.partition(ACTIVE_SUFFIX + ".")
    return LogKind.ROTATED if head and sep and suffix else LogKind.OTHER


def safe_name(text: str) -> str:
    """``text`` as one file-name and key segment: runs of other characters become ``-``, starts with a letter/digit."""
    cleaned = _UNSAFE_NAME_CHARS.sub("-", text).lstrip("._-")
    return cleaned[:100] or "pzone"


def active_log_name(command: str, hostname: str | None = None) -> str:
    """``<command>-<hostname>.log``: one active file per command and host (pod), so two writers never share one."""
    return f"{safe_name(command)}-{safe_name(hostname or socket.gethostname())}{ACTIVE_SUFFIX}"


# ---------------------------------------------------------------------------------------------------------------
# Writing: the rotating file handler behind PZONE_LOG_DIR


class RotatingLogHandler(logging.handlers.TimedRotatingFileHandler):
    """Hourly rotation (UTC) to ``<active>.<YYYY-mm-dd_HH>``, and to ``<active>.<YYYY-mm-dd_HH-MM-SS>`` when closed.

    Rotated names are never reused (a taken one gets ``.1``, ``.2``…), and nothing is ever deleted here: that is
    ``pzone logs backup --delete-uploaded``'s job, after the copy in S3 is verified.
    """

    def __init__(self, filename: Path, *, when: str = "H") -> None:
        super().__init__(filename, when=when, backupCount=0, encoding="utf-8", delay=True, utc=True)

    def rotation_filename(self, default_name: str) -> str:
        name, n = default_name, 0
        while os.path.lexists(name):
            n += 1
            name = f"{default_name}.{n}"
        return name

    def _closing_name(self) -> str:
        # The moment of closing, to the second: a later process under the same name (a restarted container)
        # cannot pick this name again once the backup has deleted this file, so no object in S3 is overwritten.
        return self.rotation_filename(f"{self.baseFilename}.{time.strftime(CLOSING_SUFFIX, time.gmtime())}")

    def close(self) -> None:
        self.acquire()
        try:
            had_stream = self.stream is not None
            super().close()
            if had_stream:
                try:
                    if os.path.getsize(self.baseFilename) > 0:
                        os.rename(self.baseFilename, self._closing_name())
                except OSError:
                    pass  # gone already (rotated by someone else) or unreadable: the next writer rotates it
        finally:
            self.release()


def install_file_logging(log_dir: Path, command: str, level: int | str = logging.INFO) -> Path:
    """Add a :class:`RotatingLogHandler` for ``<log_dir>/<command>-<hostname>.log`` to the root logger.

    Replaces (and so rotates) one installed before by this function; raises OSError when the folder cannot be made.
    Returns the active file's path (created on the first record).
    """
    remove_file_logging()
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(log_dir, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write in {log_dir}")
    path = log_dir / active_log_name(command)
    handler = RotatingLogHandler(path)
    formatter = logging.Formatter(LOG_FORMAT)
    formatter.converter = time.gmtime
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = "%s.%03dZ"
    handler.setFormatter(formatter)
    handler.setLevel(level.upper() if isinstance(level, str) else level)
    logging.getLogger().addHandler(handler)
    return path


def remove_file_logging() -> None:
    """Remove and close (so rotate) the handlers :func:`install_file_logging` added."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, RotatingLogHandler):
            root.removeHandler(handler)
            handler.close()
