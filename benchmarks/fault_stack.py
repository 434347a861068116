"""The local stack of ``benchmarks/faults.py``, every part its own OS process that can be SIGKILLed and started
again on the same port: private PostgreSQL, Redis and Mosquitto (never the shared ones), moto's S3, the ingest
worker, the photo worker, the API and the BentoML model tier with a tiny model.

moto keeps its state in memory only, so it is never killed: a restart would forget every photo, which no deployed
object store does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.support without PYTHONPATH=.
    sys.path.insert(0, str(ROOT))

from tests.support.s3 import AWS_ENV_TO_CLEAR, FAKE_AWS_ENV, MotoServer  # noqa: E402
from tests.support.services import (  # noqa: E402
    MosquittoBroker,
    PrivatePostgres,
    PrivateRedis,
    create_database,
    free_port,
)

BUCKET = "pzone-faults"
INGEST_CLIENT_ID = "faults-ingest-0"
# Mosquitto saves its persistence file after every change instead of once a second (the tests' broker) or every
# 30 s (k8s/, compose): a QoS 1 message the broker acknowledged survives its SIGKILL, except one that arrives in the
# very loop turn of the kill (Mosquitto sends the PUBACK before that turn's save). The JSON says which was used.
AUTOSAVE = {
    "changes": "autosave_interval 1\nautosave_on_changes true\n",
    "interval": "",  # the tests' broker as it is: autosave_interval 1 (seconds)
}


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status) == 200
    except (OSError, ValueError):
        return False


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started, all at once (a killed container). BentoML's workers run in
    sessions of their own, so a process group would miss them: the tree is read from /proc first."""
    try:
        root = psutil.Process(pid)
        doomed = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in doomed:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(doomed, timeout=15)


class Service:
    """One part of the stack: ``start()`` returns once it is ready, ``kill()`` is a SIGKILL, ``stop()`` ends it."""

    name = "?"

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.kill()


class ProcessService(Service):
    """A command of ours (ingest worker, photo worker, API, model tier), its output appended to a log file."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str],
        log: Path,
        ready: Callable[[], bool],
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.name, self.command, self.env, self.log = name, command, dict(env), log
        self.ready, self.ready_timeout_s = ready, ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0

    def start(self) -> None:
        self.starts += 1
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.starts} of {self.name} ---\n".encode())
            out.flush()
            # A session of its own: a Ctrl-C in the terminal reaches only the benchmark, which stops it in order.
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready within {self.ready_timeout_s}s: {self.tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            kill_tree(self.process.pid)
            self.process.wait(timeout=15)
            self.process = None

    def stop(self) -> None:
        """SIGTERM (the graceful stop each command has), SIGKILL for whatever is left after 20 s."""
        if self.process is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = [
                psutil.Process(self.process.pid),
                *psutil.Process(self.process.pid).children(recursive=True),
            ]
            self.process.terminate()
            _gone, alive = psutil.wait_procs(tree, timeout=20)
            for process in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        self.process.wait(timeout=15)
        self.process = None

    def output(self) -> str:
        """What this run of the command has written so far."""
        with self.log.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class BrokerService(Service):
    name = "broker"

    def __init__(self, workdir: Path, autosave: str) -> None:
        folder = workdir / "mosquitto"
        folder.mkdir()
        self.broker = MosquittoBroker(folder, extra_conf=AUTOSAVE[autosave])

    def start(self) -> None:
        self.broker.start()

    def kill(self) -> None:
        self.broker.kill()

    def stop(self) -> None:
        self.broker.stop()


class PostgresService(Service):
    name = "postgres"

    def __init__(self) -> None:
        self.server = PrivatePostgres()

    def start(self) -> None:
        self.server.start()  # pg_ctl -w: back once it accepts connections (after crash recovery)

    def kill(self) -> None:
        self.server.kill()

    def stop(self) -> None:
        self.server.remove()


class RedisService(Service):
    name = "redis"

    def __init__(self, workdir: Path) -> None:
        folder = workdir / "redis"
        folder.mkdir()
        self.redis = PrivateRedis(folder)

    def start(self) -> None:
        self.redis.start()

    def kill(self) -> None:
        self.redis.kill()


@dataclass
class StackSettings:
    """What the benchmark shortens so that a fault's consequences settle within the run (all ``PZONE_*``)."""

    processing_wait_s: float = 5.0  # a complete waits this long for the worker, then 202
    processing_stuck_after_s: float = 8.0  # a photo processing this long with no live lease is enqueued again
    processing_lease_s: float = 20.0  # well above a job here (small photos, the tier's 5 s timeout)
    verdict_retry_interval_s: float = 2.0  # the API's housekeeping pass


class Stack:
    """Every service, started in order, each by name for the faults."""

    def __init__(
        self,
        workdir: Path,
        autosave: str,
        settings: StackSettings,
        log: Callable[[str], None],
        shared_subscription: bool = False,
    ) -> None:
        self.workdir, self.settings, self.log = workdir, settings, log
        self.shared_subscription = shared_subscription
        self.postgres = PostgresService()
        self.redis = RedisService(workdir)
        self.broker = BrokerService(workdir, autosave)
        self.moto = MotoServer()
        self.api_port, self.tier_port, self.metrics_port = free_port(), free_port(), free_port()
        self.database_url = ""
        self.services: dict[str, Service] = {}
        self._started: list[Service] = []

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def tier_url(self) -> str:
        return f"http://127.0.0.1:{self.tier_port}"

    def env(self) -> dict[str, str]:
        """The environment of our processes: the private services, fake AWS credentials and nothing inherited
        that could point anywhere else."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("PZONE_") and k not in AWS_ENV_TO_CLEAR
        }
        s = self.settings
        env.update(FAKE_AWS_ENV)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "PZONE_DATA_DIR": str(self.workdir / "data"),
                "PZONE_DATABASE_URL": self.database_url,
                "PZONE_REDIS_URL": self.redis.redis.url,
                "PZONE_MQTT_URL": self.broker.broker.url,
                "PZONE_S3_BUCKET": BUCKET,
                "PZONE_S3_ENDPOINT_URL": self.moto.endpoint_url,
                "PZONE_S3_REGION": "us-east-1",
                "PZONE_MODEL_TIER_URL": self.tier_url,
                "PZONE_COOKIE_SECURE": "false",
                "PZONE_PROCESSING_WAIT_S": str(s.processing_wait_s),
                "PZONE_PROCESSING_STUCK_AFTER_S": str(s.processing_stuck_after_s),
                "PZONE_PROCESSING_LEASE_S": str(s.processing_lease_s),
                "PZONE_VERDICT_RETRY_INTERVAL_S": str(s.verdict_retry_interval_s),
                "PZONE_INGEST_CLIENT_ID": INGEST_CLIENT_ID,
                "PZONE_INGEST_METRICS_PORT": str(self.metrics_port),
                "PZONE_LOG_LEVEL": "WARNING",
                "BENTOML_HOME": str(self.workdir / "bentoml"),
                "BENTOML_DO_NOT_TRACK": "True",
                "PZONE_MODEL_WATCH_INTERVAL_S": "0",
                # One worker with one thread: the tier shares 2 cores with everything else here.
                "PZONE_MODEL_WORKERS": "1",
                "PZONE_ORT_THREADS": "1",
                "COLUMNS": "200",
            }
        )
        # "": a plain subscription (the default, one worker); a group: the scale-out setting.
        env["PZONE_INGEST_SHARED_GROUP"] = "pzone-ingest" if self.shared_subscription else ""
        return env

    def start(self) -> None:
        """The data services first (moto, Redis, Mosquitto, PostgreSQL: created, migrated), the tiny model into a
        private BentoML store, then our processes; each waits until ready."""
        from pzone.migrations import upgrade

        self.moto.start()
        self._started.append(_Moto(self.moto))
        for service in (self.redis, self.broker):
            service.start()
            self._started.append(service)
        self._started.append(self.postgres)  # its folder exists already: removed even if initdb fails
        self.postgres.server.init()  # initdb and start
        _name, self.database_url = create_database(self.postgres.server.admin_url)
        upgrade(self.database_url)
        self.log("private PostgreSQL, Redis and Mosquitto up; schema migrated")
        _create_bucket(self.moto.endpoint_url)
        env = self.env()
        _import_tiny_model(env, self.workdir)
        logs = self.workdir / "logs"
        logs.mkdir()
        python = sys.executable
        from pzone_model import serve_command
        from tests.support.api import uvicorn_command

        processes = [
            ProcessService(
                "model_tier",
                [*serve_command(), "--host", "127.0.0.1", "--port", str(self.tier_port)],
                env,
                logs / "model_tier.log",
                lambda: _http_ok(f"{self.tier_url}/readyz"),
            ),
            ProcessService(
                "ingest",
                [python, "-m", "pzone.cli", "ingest"],
                env,
                logs / "ingest.log",
                self._ingest_connected,
            ),
            ProcessService(
                "api",
                uvicorn_command("tests.support.api:app_from_env", self.api_port),
                env,
                logs / "api.log",
                lambda: _http_ok(f"{self.api_url}/api/healthz"),
            ),
        ]
        processes.append(
            ProcessService(
                "photo_worker",
                [python, "-m", "pzone.cli", "photos", "worker", "--workers", "1"],
                env,
                logs / "photo_worker.log",
                lambda: _worker_started(processes[-1]),
            )
        )
        for process in processes:
            process.start()
            self._started.append(process)
            self.services[process.name] = process
        self.services.update(postgres=self.postgres, redis=self.redis, broker=self.broker)

    def _ingest_connected(self) -> bool:
        """The worker's own gauge: connected to the broker (it subscribes in the same callback)."""
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=2) as reply:
                return b"pzone_ingest_connected 1.0" in reply.read()
        except OSError:
            return False

    def stop(self) -> None:
        """Everything that was started, in reverse order; a failure to stop one does not keep the rest running."""
        while self._started:
            service = self._started.pop()
            try:
                service.stop()
            except Exception as exc:  # keep stopping the others; say what was left
                self.log(f"[red]could not stop {service.name}: {exc!r}")
                with contextlib.suppress(Exception):
                    service.kill()

    def logs_tail(self, chars: int = 1500) -> dict[str, str]:
        return {
            name: service.tail(chars)
            for name, service in self.services.items()
            if isinstance(service, ProcessService)
        }


class _Moto(Service):
    name = "moto"

    def __init__(self, server: MotoServer) -> None:
        self.server = server

    def kill(self) -> None:
        self.server.stop()


def _worker_started(service: ProcessService) -> bool:
    """The photo worker printed its start line in this run of it (it consumes from then on)."""
    return "photo worker: queue" in service.output()


def _create_bucket(endpoint_url: str) -> None:
    import boto3

    boto3.client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1", **_moto_credentials()
    ).create_bucket(Bucket=BUCKET)


def _moto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }


def s3_client(endpoint_url: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1", **_moto_credentials())


def _import_tiny_model(env: Mapping[str, str], workdir: Path) -> None:
    """The tests' tiny ONNX model, imported into the private BentoML store as the package stage does (in a child
    process: BentoML reads BENTOML_HOME once per process)."""
    code = (
        "import sys; from pathlib import Path; from tests.support.tiny_model import import_tiny; "
        "print(import_tiny(Path(sys.argv[1]), (0.0, 0.0, 5.0), '1'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(workdir / "model")],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"importing the tiny model failed: {done.stderr[-2000:]}")


def new_workdir() -> Path:
    """A temp folder for the run (logs, broker and Redis files, the BentoML store); PostgreSQL has its own under
    /tmp, which its server user can reach."""
    return Path(tempfile.mkdtemp(prefix="pzone-faults-"))


def remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
