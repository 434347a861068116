"""Fixtures of the firmware's tests: subscribers on the test's private broker, closed when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

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
