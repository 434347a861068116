"""Fault injection on the whole circle: the local stack under a steady fleet and photo load while its parts are
SIGKILLed and started again in turn, then the invariants checked.

The stack (``benchmarks/fault_stack.py``) runs on private PostgreSQL, Redis and Mosquitto instances (never the
shared ones) and moto's S3, with the ingest worker, the photo worker, the API and the BentoML model tier (a tiny
model) each its own process. The load (``benchmarks/fault_load.py``): simulated tilt nodes (the firmware's own
``TiltNode`` with the CPython HAL) publishing on the private broker, and one user uploading small JPEGs through the
API by both paths. Each fault, in turn: SIGKILL (the whole process tree), a few seconds down, started again on the
same port, ready, a settle period. Then the load stops, the devices flush what they had not got acknowledged, and:

- every reading whose PUBACK a device received is stored exactly once (the seq audit, by (device, epoch, seq));
- every upload that got a 2xx reaches a terminal state (stored with a verdict, or refused with a reason);
- no stored photo's original in S3 differs from its checked hash (nor from the bytes the client sent);
- the API answered no 5xx outside a fault's window: from the kill to ``window_s`` after it was ready again.

    uv run python benchmarks/faults.py --quick     # all seven faults, short, ~2.5-3 min on 2 cores
    uv run python benchmarks/faults.py             # longer load, more devices, each fault twice

Progress goes to stderr (a line per step, a table at the end); the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.support and benchmarks without PYTHONPATH=.
    sys.path.insert(0, str(ROOT))

from benchmarks.fault_load import (  # noqa: E402
    ApiRequest,
    Fleet,
    PhotoClient,
    audit_photos,
    audit_readings,
)
from benchmarks.fault_stack import (  # noqa: E402
    AUTOSAVE,
    BUCKET,
    Stack,
    StackSettings,
    new_workdir,
    remove_workdir,
    s3_client,
)
from tests.support.s3 import AWS_ENV_TO_CLEAR, FAKE_AWS_ENV  # noqa: E402

FAULTS = ("ingest", "broker", "postgres", "redis", "photo_worker", "model_tier", "api")
MAX_WINDOW_S = 30.0  # the bound: a fault's window ends at most 30 s after its part is back


@dataclass(frozen=True)
class Plan:
    devices: int
    rate_hz: float
    photo_pause_s: float
    warmup_s: float
    down_s: float
    settle_s: float
    rounds: int
    window_s: float
    readings_drain_s: float
    photos_drain_s: float
    autosave: str
    shared_subscription: bool
    faults: tuple[str, ...]
    seed: int


QUICK = Plan(
    devices=6,
    rate_hz=2.0,
    photo_pause_s=0.3,
    warmup_s=5.0,
    down_s=3.0,
    settle_s=11.0,  # longer than the window: the load runs outside every window for a while before the next kill
    rounds=1,
    window_s=8.0,
    readings_drain_s=30.0,
    photos_drain_s=60.0,
    autosave="changes",
    shared_subscription=False,  # as deployed: one worker on a plain subscription
    faults=FAULTS,
    seed=1,
)
FULL = replace(
    QUICK, devices=20, warmup_s=10.0, down_s=8.0, settle_s=20.0, rounds=2, window_s=15.0, photos_drain_s=90.0
)


@dataclass(frozen=True)
class Fault:
    name: str
    occurrence: int  # 2 for the second time this part is killed
    killed_at: float
    restarted_at: float
    ready_at: float

    @property
    def label(self) -> str:
        return self.name if self.occurrence == 1 else f"{self.name}#{self.occurrence}"

    def overlaps(self, start: float, end: float, window_s: float) -> bool:
        return start <= self.ready_at + window_s and end >= self.killed_at


class Timeline:
    """Seconds since the start, and a progress line per step on stderr (also when piped)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def log(self, message: str) -> None:
        sys.stderr.write(f"[{self.now():6.1f}s] {message}\n")
        sys.stderr.flush()


# --- the run ------------------------------------------------------------------------------------------------------
def run(plan: Plan, timeline: Timeline, keep: bool) -> dict[str, Any]:
    log, now = timeline.log, timeline.now
    workdir = new_workdir()
    stack = Stack(workdir, plan.autosave, StackSettings(), log, plan.shared_subscription)
    fleet: Fleet | None = None
    client: PhotoClient | None = None
    try:
        log(f"starting the stack in {workdir}")
        stack.start()
        startup_s = now()
        log(f"stack ready: {', '.join(stack.services)} (start-up {startup_s:.1f}s)")
        fleet = Fleet(stack.broker.broker.url, plan.devices, plan.rate_hz, workdir / "fleet", now, plan.seed)
        fleet.start()
        _wait_devices(stack.database_url, plan.devices, timeout_s=30.0)
        log(
            f"fleet: {plan.devices} devices at {plan.rate_hz:g} Hz stored by the ingest worker; photo load starts"
        )
        client = PhotoClient(stack.api_url, fleet.device_ids, now, plan.photo_pause_s, plan.seed)
        client.start()
        time.sleep(plan.warmup_s)
        faults: list[Fault] = []
        for _round in range(plan.rounds):
            for name in plan.faults:
                occurrence = 1 + sum(1 for f in faults if f.name == name)
                faults.append(_inject(stack, name, occurrence, plan, timeline, fleet, client))
        log("faults done; stopping the load (the devices flush what was not acknowledged)")
        client.finish()
        stats = fleet.finish()
        log(
            f"fleet stopped: {fleet.acked()} readings acknowledged, {stats.undelivered} never delivered, "
            f"{stats.buffer_drops} dropped from full buffers, {stats.reconnects} reconnects"
        )
        readings = audit_readings(stack.database_url, fleet.acked_keys(stats), plan.readings_drain_s, log)
        log(
            f"readings: {readings['readings_stored']}/{readings['readings_acked']} acknowledged stored, "
            f"lost {readings['readings_lost']}, duplicated {readings['readings_duplicated']}"
        )
        photos = audit_photos(
            client,
            stack.database_url,
            s3_client(stack.moto.endpoint_url),
            BUCKET,
            _outcomes(stack),
            plan.photos_drain_s,
            log,
        )
        log(
            f"photos: {photos['uploads_terminal']}/{photos['uploads_accepted']} accepted uploads terminal, "
            f"originals mismatched {photos['originals_mismatched']}"
        )
        return summarise(plan, faults, fleet, client, stats, readings, photos, startup_s, stack, timeline)
    except Exception:
        with contextlib.suppress(Exception):
            for name, tail in stack.logs_tail().items():
                log(f"--- {name} log, last lines ---\n{tail}")
        raise
    finally:
        if client is not None:
            client.stop_event.set()
        if fleet is not None:
            fleet.stop_event.set()
        log("stopping the stack")
        stack.stop()
        if client is not None:
            client.close()
        if keep:
            log(f"kept {workdir}")
        else:
            remove_workdir(workdir)


def _inject(
    stack: Stack,
    name: str,
    occurrence: int,
    plan: Plan,
    timeline: Timeline,
    fleet: Fleet,
    client: PhotoClient,
) -> Fault:
    service = stack.services[name]
    timeline.log(f"kill {name} (SIGKILL)")
    killed = timeline.now()
    service.kill()
    time.sleep(plan.down_s)
    restarted = timeline.now()
    timeline.log(f"start {name}")
    service.start()
    ready = timeline.now()
    timeline.log(
        f"{name} back (ready {ready - restarted:.1f}s after its start, {ready - killed:.1f}s after the kill); "
        f"so far {fleet.acked()} readings acknowledged, {len(client.accepted)} uploads accepted"
    )
    time.sleep(plan.settle_s)
    return Fault(name, occurrence, killed, restarted, ready)


def _wait_devices(database_url: str, count: int, timeout_s: float) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as conn:
                n = conn.execute(text("SELECT count(*) FROM devices WHERE id LIKE 'faults-%'")).scalar_one()
            if n >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {n} of {count} devices stored after {timeout_s}s")
            time.sleep(0.25)
    finally:
        engine.dispose()


def _outcomes(stack: Stack) -> Any:
    """A refused photo's reason: its job's outcome in the queue (the API's own PhotoQueue, read only)."""
    from pzone.db.engine import make_engine
    from pzone.storage import object_store_from_settings
    from pzone_api.processing import photo_queue_from_settings
    from pzone_api.settings import Settings

    env = stack.env()
    settings = Settings(
        database_url=env["PZONE_DATABASE_URL"],
        redis_url=env["PZONE_REDIS_URL"],
        s3_bucket=BUCKET,
        s3_endpoint_url=env["PZONE_S3_ENDPOINT_URL"],
        s3_region="us-east-1",
        processing_queue_name=Settings.model_fields["processing_queue_name"].default,
    )
    queue = photo_queue_from_settings(
        settings, make_engine(settings.sqlalchemy_url), object_store_from_settings(settings)
    )
    return queue.outcome


# --- the report ---------------------------------------------------------------------------------------------------
def summarise(
    plan: Plan,
    faults: list[Fault],
    fleet: Fleet,
    client: PhotoClient,
    stats: Any,
    readings: dict[str, Any],
    photos: dict[str, Any],
    startup_s: float,
    stack: Stack,
    timeline: Timeline,
) -> dict[str, Any]:
    window_s = plan.window_s
    requests = client.requests

    def fault_of(start: float, end: float) -> Fault | None:
        """The latest fault whose window the interval meets (windows may overlap the next fault's)."""
        return max(
            (f for f in faults if f.overlaps(start, end, window_s)), key=lambda f: f.killed_at, default=None
        )

    five = [r for r in requests if r.status is not None and r.status >= 500]
    outside = [r for r in five if fault_of(r.start, r.end) is None]
    lost_by: Counter[str] = Counter()
    lost_sample: list[dict[str, Any]] = []
    for device_id, epoch, seq in readings.pop("missing"):
        t0, t1 = fleet.ack_times.get((device_id, seq), (0.0, timeline.now()))
        fault = fault_of(t0, t1)
        lost_by[fault.label if fault else "none"] += 1
        if len(lost_sample) < 20:
            lost_sample.append(
                {"device_id": device_id, "epoch": epoch, "seq": seq, "acked_s": [round(t0, 1), round(t1, 1)]}
            )
    per_fault = []
    for fault in faults:
        mine = [r for r in requests if fault_of(r.start, r.end) is fault]
        late = [r.end - fault.ready_at for r in mine if r.status is not None and r.status >= 500]
        per_fault.append(
            {
                "name": fault.label,
                "killed_at_s": round(fault.killed_at, 1),
                "back_at_s": round(fault.ready_at, 1),
                "down_s": round(fault.ready_at - fault.killed_at, 1),
                "restart_s": round(fault.ready_at - fault.restarted_at, 1),
                "api_requests": len(mine),
                "api_5xx": len(late),
                "api_5xx_codes": dict(Counter(_code(r) for r in mine if r.status and r.status >= 500)),
                "api_no_answer": sum(1 for r in mine if r.status is None),
                "last_5xx_after_back_s": round(max(late), 1) if late else None,
                "readings_lost": lost_by.get(fault.label, 0),
            }
        )
    summary: dict[str, Any] = {
        "faults": per_fault,
        **readings,
        "readings_lost_by_fault": dict(lost_by),
        "readings_lost_sample": lost_sample,
        "readings_never_delivered": stats.undelivered,
        "readings_buffer_drops": stats.buffer_drops,
        "uploads_attempted": client.attempts,
        **photos,
        "api_requests": len(requests),
        "api_5xx": len(five),
        "api_5xx_outside_windows": len(outside),
        "api_5xx_outside": [asdict(r) for r in outside[:20]],
        "api_5xx_codes": dict(Counter(_code(r) for r in five)),
        "api_no_answer": sum(1 for r in requests if r.status is None),
        "window_s": window_s,
        "window": f"from the kill to {window_s:g} s after the part was ready again (at most {MAX_WINDOW_S:g} s)",
        "client_errors": client.errors[:10],
        "s3_put_failures": client.s3_put_failures,
        "devices": plan.devices,
        "rate_hz": plan.rate_hz,
        "down_s": plan.down_s,
        "settle_s": plan.settle_s,
        "rounds": plan.rounds,
        "broker_autosave": plan.autosave,
        "ingest_subscription": "shared" if plan.shared_subscription else "plain",
        "startup_s": round(startup_s, 1),
        "wall_s": round(timeline.now(), 1),
        "machine_cores": os.cpu_count(),
        "versions": _versions(stack),
    }
    summary["targets"] = {
        "no_acked_reading_lost": summary["readings_lost"] == 0,
        "no_reading_duplicated": summary["readings_duplicated"] == 0,
        "every_accepted_upload_terminal": summary["uploads_terminal"] == summary["uploads_accepted"],
        "no_original_mismatched": summary["originals_mismatched"] == 0,
        "no_5xx_outside_windows": summary["api_5xx_outside_windows"] == 0,
    }
    return summary


def _code(request: ApiRequest) -> str:
    return f"{request.status} {request.code}" if request.code else str(request.status)


def _versions(stack: Stack) -> dict[str, str]:
    from tests.support.services import PG_BIN

    versions = {"python": platform.python_version()}
    commands = {
        "mosquitto": ["mosquitto", "-h"],
        "postgresql": [str(PG_BIN / "postgres"), "--version"],
        "redis": ["redis-server", "--version"],
    }
    for name, command in commands.items():
        with contextlib.suppress(Exception):
            out = subprocess.run(command, capture_output=True, text=True, timeout=5).stdout
            versions[name] = out.splitlines()[0].strip()
    return versions


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"P-ZONE faults: windows from the kill to {summary['window_s']:g} s after back")
    columns = (
        "fault",
        "killed at s",
        "down s",
        "restart s",
        "API requests",
        "5xx",
        "no answer",
        "readings lost",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "fault" else "right")
    for f in summary["faults"]:
        table.add_row(
            f["name"],
            f"{f['killed_at_s']:.1f}",
            f"{f['down_s']:.1f}",
            f"{f['restart_s']:.1f}",
            str(f["api_requests"]),
            str(f["api_5xx"]),
            str(f["api_no_answer"]),
            str(f["readings_lost"]),
        )
    console = Console(stderr=True, highlight=False, width=120)
    console.print(table)
    console.print(
        f"readings: acked {summary['readings_acked']}, stored {summary['readings_stored']}, "
        f"lost {summary['readings_lost']}, duplicated {summary['readings_duplicated']}, stored unacked "
        f"{summary['readings_stored_unacked']} | uploads: accepted {summary['uploads_accepted']}, terminal "
        f"{summary['uploads_terminal']} (stored {summary['uploads_stored']}, refused {summary['uploads_refused']}), "
        f"originals mismatched {summary['originals_mismatched']} | API: {summary['api_requests']} requests, "
        f"5xx {summary['api_5xx']}, outside windows {summary['api_5xx_outside_windows']}"
    )
    console.print(f"targets: {summary['targets']}")


def _stop_on_sigterm() -> None:
    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # the run's finally stops every process it started

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="every fault once, short: ~3 min on 2 cores")
    parser.add_argument("--faults", help=f"comma-separated subset and order of {','.join(FAULTS)}")
    parser.add_argument("--devices", type=int, help="simulated devices")
    parser.add_argument("--rate-hz", type=float, help="readings per second per device")
    parser.add_argument("--down-s", type=float, help="seconds each part stays down")
    parser.add_argument("--settle-s", type=float, help="seconds after a part is back before the next fault")
    parser.add_argument("--rounds", type=int, help="times each fault is injected")
    parser.add_argument(
        "--window-s", type=float, help=f"a fault's window after the part is back (<= {MAX_WINDOW_S:g})"
    )
    parser.add_argument(
        "--broker-autosave",
        choices=sorted(AUTOSAVE),
        help="changes: Mosquitto saves after every change (default); interval: once a second, as the tests' broker",
    )
    parser.add_argument(
        "--ingest-subscription",
        choices=("shared", "plain"),
        help="plain: pzone/#, one worker, as deployed (default); shared: $share/pzone-ingest/pzone/#, the "
        "scale-out setting, which Mosquitto does not restore through a broker restart",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs) afterwards")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    overrides = {
        "devices": args.devices,
        "rate_hz": args.rate_hz,
        "down_s": args.down_s,
        "settle_s": args.settle_s,
        "rounds": args.rounds,
        "window_s": args.window_s,
        "autosave": args.broker_autosave,
    }
    plan = replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    if args.ingest_subscription:
        plan = replace(plan, shared_subscription=args.ingest_subscription == "shared")
    if args.faults:
        chosen = tuple(f.strip() for f in args.faults.split(",") if f.strip())
        unknown = set(chosen) - set(FAULTS)
        if unknown:
            parser.error(f"unknown faults {sorted(unknown)}")
        plan = replace(plan, faults=chosen)
    if not 0 <= plan.window_s <= MAX_WINDOW_S:
        parser.error(f"--window-s must be within 0..{MAX_WINDOW_S:g}")
    # boto3 in this process (the audit reads S3) must find moto's fake credentials, never real ones.
    for name in AWS_ENV_TO_CLEAR:
        os.environ.pop(name, None)
    os.environ.update(FAKE_AWS_ENV)
    _stop_on_sigterm()
    timeline = Timeline()
    timeline.log(
        f"P-ZONE faults ({'quick' if args.quick else 'full'}): {', '.join(plan.faults)} x{plan.rounds}, "
        f"{plan.devices} devices at {plan.rate_hz:g} Hz, {plan.down_s:g}s down, {plan.settle_s:g}s settle, "
        f"window {plan.window_s:g}s, broker autosave {plan.autosave}, "
        f"{'shared' if plan.shared_subscription else 'plain'} ingest subscription, {os.cpu_count()} cores"
    )
    try:
        summary = run(plan, timeline, args.keep)
    except KeyboardInterrupt:
        timeline.log("interrupted: every process the run started is stopped")
        return 130
    summary["quick"] = args.quick
    summary["wall_s"] = round(timeline.now(), 1)  # with the stack's stop
    print_table(summary)
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
