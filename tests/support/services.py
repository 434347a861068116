"""Real services for tests: private Mosquitto, PostgreSQL and Redis instances on their own ports, fresh databases.

Tests that stop or restart a service use these private instances, never the shared ones on the standard ports.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SHARED_PG_ADMIN = os.environ.get("PZONE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BIN = Path(os.environ.get("PZONE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port from the ephemeral range can be taken while its server is down: a client that keeps reconnecting to
    127.0.0.1:P may be handed source port P and connect to itself (TCP simultaneous open), and then the restarted
    server cannot bind. Ports outside that range are never handed out as source ports.
    """
    low, high = _ephemeral_range()
    candidates = [port for port in range(20000, 32768) if not low <= port <= high]
    for port in random.sample(candidates, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_port(port: int, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something listens on the port; fail at once, with its stderr, if `process` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"the process for port {port} exited ({process.returncode}): {err.strip()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {dir}/
autosave_interval 1
# Deep queues: a QoS 1 subscriber that falls behind must not lose messages (the default drops after 1000).
max_queued_messages 1000000
max_inflight_messages 100
log_dest file {dir}/mosquitto.log
log_type error
log_type warning
"""


@dataclass
class MosquittoBroker:
    """A private Mosquitto process with persistence in its own folder; can be stopped and started again."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_conf: str = ""  # more lines for mosquitto.conf (a later line overrides an earlier one)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        text = MOSQUITTO_CONF.format(port=self.port, dir=self.workdir) + self.extra_conf
        if os.geteuid() == 0:
            text += "# Stay root: the private folder is not reachable by the 'mosquitto' user it would switch to.\nuser root\n"
        conf.write_text(text)
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_port(self.port, process=self.process)

    def stop(self) -> None:
        """Graceful stop (SIGTERM): Mosquitto writes its persistence file, as a real restart would."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash: no last save of the persistence file."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=15)
            self.process = None

    def restart(self, down_s: float = 0.5) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@dataclass
class PrivateRedis:
    """A private redis-server (no persistence) in its own folder; ``kill()`` drops it as a crash would."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_port(self.port, process=self.process)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=15)
            self.process = None


def create_database(admin_url: str = SHARED_PG_ADMIN) -> tuple[str, str]:
    """A fresh, empty database; returns (name, SQLAlchemy URL)."""
    name = f"pzone_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return name, f"{base}/{name}"


def drop_database(name: str, admin_url: str = SHARED_PG_ADMIN) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class PrivatePostgres:
    """A private PostgreSQL cluster (initdb + pg_ctl) in a temp folder, for tests that restart the database."""

    # Directly under /tmp: pytest's tmp_path is private to root, and the server runs as the postgres user.
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pzone-pg-")))
    port: int = field(default_factory=free_port)

    def _run(self, *args: str) -> None:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}")

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.workdir / "pg.log"), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def kill(self) -> None:
        """SIGKILL to the postmaster and every process it started at once, as when its container is killed:
        ``start()`` then runs crash recovery."""
        import psutil

        pid_file = self.data / "postmaster.pid"
        try:
            postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            doomed = [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
            return  # not running
        for process in doomed:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(doomed, timeout=15)

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)
