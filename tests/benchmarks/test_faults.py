"""The fault-injection run (``benchmarks/faults.py --quick``) keeps the circle's invariants: every part of the stack
SIGKILLed and started again in turn under a steady fleet and photo load, on private PostgreSQL, Redis and
Mosquitto instances."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from benchmarks.faults import FAULTS
from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIMIT_S = 290  # the quick run takes ~2.5 min on 2 cores


def run_quick() -> dict[str, Any]:
    process = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "faults.py"), "--quick"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the benchmark stops every process it started, then exits
        out, err = process.communicate(timeout=60)
        pytest.fail(f"the quick run took more than {LIMIT_S}s:\n{err[-4000:]}")
    assert process.returncode == 0, err[-4000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.timeout(LIMIT_S + 90)
def test_every_fault_in_turn_keeps_the_invariants() -> None:
    summary = run_quick()
    context = json.dumps({k: v for k, v in summary.items() if k != "versions"})[:6000]
    assert [f["name"] for f in summary["faults"]] == list(FAULTS), context
    assert summary["readings_acked"] > 0 and summary["uploads_accepted"] > 0, context

    # As deployed, one ingest worker on a plain subscription, which Mosquitto restores through its own restart:
    # nothing a device got acknowledged is lost, whichever part was killed.
    assert summary["ingest_subscription"] == "plain", context
    assert summary["readings_lost"] == 0 and summary["readings_lost_by_fault"] == {}, context
    assert summary["readings_duplicated"] == 0, context
    assert summary["uploads_terminal"] == summary["uploads_accepted"], context
    assert summary["originals_mismatched"] == 0, context
    assert summary["api_5xx_outside_windows"] == 0, context
    assert summary["window_s"] <= 30, context
