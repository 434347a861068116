"""The board's node logic on real MicroPython (its WebAssembly port, tools/micropython), not only under CPython.

One interpreter runs every scenario of tests/firmware/micropython/scenarios.py against an in-memory board
(memhal.py) and asserts there; the tests here check its summary again and parse what it delivered as the ingest
does. A construct only CPython accepts, or a reading lost on the device, fails the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pzone.telemetry import Limits, TiltState, parse_reading
from tests.support.micropython import run_board_scenarios, run_micropython
from tests.support.mqtt import to_event

pytestmark = pytest.mark.unit

V1_FIELDS = {"v", "device_id", "epoch", "seq", "ts", "ax", "ay", "az", "battery"}


def test_the_board_modules_run_on_micropython(board_scenarios: dict[str, Any]) -> None:
    assert board_scenarios["implementation"] == "micropython"
    assert tuple(board_scenarios["version"]) >= (1, 27, 0)
    assert board_scenarios["device_scripts"] == ["boot.py", "main.py"]  # they compile there


def test_readings_taken_while_the_broker_is_away_arrive_once_in_order(
    board_scenarios: dict[str, Any],
) -> None:
    run = board_scenarios["scenarios"]["away_and_back"]
    stats = run["stats"]
    # two outages, the second ending in the middle of a flush
    assert stats["reconnects"] >= 2 and stats["connect_failures"] >= 2
    assert run["seqs"] == list(range(stats["readings"]))
    assert stats["published"] == stats["readings"] and stats["buffer_drops"] == 0 and stats["buffered"] == 0


def test_a_reboot_mid_block_never_reuses_a_sequence_number(board_scenarios: dict[str, Any]) -> None:
    run = board_scenarios["scenarios"]["reboot_mid_block"]
    # blocks of 8: the first boot used 0..4, the second 8..20 (18..20 died in RAM at the power cut), the third 24..
    assert run["seqs"] == [*range(5), *range(8, 18), 24, 25]
    assert run["lost"] == [18, 19, 20]
    # the same through the board's own FlashStorage on MicroPython's file system
    assert board_scenarios["scenarios"]["board_flash"]["seqs"] == [0, 1, 2, 8]


def test_a_reflashed_board_counts_again_under_a_new_epoch(board_scenarios: dict[str, Any]) -> None:
    keys = [tuple(k) for k in board_scenarios["scenarios"]["reflash"]["keys"]]
    assert [seq for _, seq in keys] == [0, 1, 2, 0, 1, 2]
    assert len({epoch for epoch, _ in keys}) == 2 and len(set(keys)) == len(keys)


def test_a_full_buffer_drops_the_oldest_counts_them_and_delivers_the_rest(
    board_scenarios: dict[str, Any],
) -> None:
    run = board_scenarios["scenarios"]["full_buffer"]
    assert run["seqs"] == [6, 7, 8, 9]
    assert run["stats"]["buffer_drops"] == 6 and run["stats"]["readings"] == 10


def test_payloads_made_on_micropython_pass_the_ingest_parser(board_scenarios: dict[str, Any]) -> None:
    readings = board_scenarios["readings"]
    assert len(readings) > 50
    for topic, payload in readings:
        body = json.loads(payload)
        assert set(body) <= V1_FIELDS and {"v", "device_id", "seq", "ax", "ay", "az"} <= set(body)
        assert isinstance(body["epoch"], int)
        # the board's clock gives whole seconds; it is unset right after a reboot, and then ts is left out
        received_ms = body["ts"] * 1000 if "ts" in body else 1764070000000
        reading = parse_reading(to_event(topic, payload.encode(), received_ms), Limits())
        assert (reading.seq, reading.epoch, reading.state) == (body["seq"], body["epoch"], TiltState.UPRIGHT)
    assert any("ts" not in json.loads(payload) for _, payload in readings)


def test_a_reading_lost_on_the_device_fails_the_run(micropython: list[str]) -> None:
    result = run_board_scenarios(micropython, "--lose-a-reading")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "AssertionError" in result.stderr and "in away_and_back" in result.stderr


# Each accepted by CPython (checked below), each refused by MicroPython: the run names the module and the error.
CPYTHON_ONLY = {
    "dataclasses": ("from dataclasses import dataclass", "ImportError: no module named 'dataclasses'"),
    "typing": ("from typing import Optional", "ImportError: no module named 'typing'"),
    # ruff's RUF005 suggests this over concatenation: the board modules opt out of that rule
    "starred display": ("def main():\n    return [*range(2), 2]", "SyntaxError"),
    "dict unpacking": ("def main():\n    return {**{'a': 1}, 'b': 2}", "SyntaxError"),
    "match": ("def main():\n    match 1:\n        case 1:\n            return 1", "SyntaxError"),
    "positional-only": ("def main(a=1, /):\n    return a", "SyntaxError"),
    "deque maxlen": (
        "import collections\n\ndef main():\n    return collections.deque(maxlen=8)",
        "TypeError: function doesn't take keyword arguments",
    ),
    "format_map": (
        "def main():\n    return '{a}'.format_map({'a': 1})",
        "AttributeError: 'str' object has no attribute 'format_map'",
    ),
}


@pytest.mark.parametrize("construct", sorted(CPYTHON_ONLY))
def test_micropython_refuses_what_only_cpython_accepts(
    micropython: list[str], tmp_path: Path, construct: str
) -> None:
    source, error = CPYTHON_ONLY[construct]
    if "def main" not in source:
        source += "\n\ndef main():\n    return None"
    namespace: dict[str, Any] = {}
    exec(compile(source, "cpython_only.py", "exec"), namespace)  # CPython takes it
    namespace["main"]()
    module = tmp_path / "cpython_only.py"
    module.write_text(source + "\n")
    script = tmp_path / "use.py"
    script.write_text("import cpython_only\n\ncpython_only.main()\n")
    result = run_micropython(micropython, script, files={"/lib": [module]})
    assert result.returncode == 1, result.stdout + result.stderr
    assert '"/lib/cpython_only.py", line' in result.stderr and error in result.stderr, result.stderr
