"""Fixtures of the firmware's tests: subscribers on the test's private broker, closed when the test ends; real
MicroPython (tools/micropython) and one run of the board scenarios on it, shared by a module's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.micropython import micropython_command, run_board_scenarios, summary_of
from tests.support.mqtt import Subscriber
from tests.support.services import MosquittoBroker


@pytest.fixture
def subscribe(broker: MosquittoBroker) -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(topics: list[str] | None = None, *, persistent: bool = False) -> Subscriber:
        sub = Subscriber(broker.port, topics or ["pzone/#"], persistent=persistent)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


@pytest.fixture(scope="module")
def micropython() -> list[str]:
    """The command that runs a script on MicroPython (skipped without Node.js, failing without the npm package)."""
    return micropython_command()


@pytest.fixture(scope="module")
def board_scenarios(micropython: list[str]) -> dict[str, Any]:
    """The summary of tests/firmware/micropython/scenarios.py, which asserted every scenario on MicroPython."""
    result = run_board_scenarios(micropython)
    if result.returncode != 0:
        pytest.fail(f"the board scenarios failed on MicroPython:\n{result.stderr}{result.stdout[-2000:]}")
    return summary_of(result)
