"""Which of a device's new readings move its state: sequence numbers within an epoch, epochs over time.

A device numbers its readings; within one epoch of its counter the highest number is the newest. A reading with a
lower number than the last applied one arrived late (an offline buffer, a redelivery): it is stored but changes
nothing. A number far ahead of the last applied one cannot come from an honest counter (a reboot skips at most a
lease block, an offline device at most one number per reading it takes) and would freeze the device behind it, so
it is refused. A reading of another epoch (a reflashed or replaced board counting from 0 again) starts that epoch
when it was measured no earlier than the last applied reading; an older one is a straggler and changes nothing.
Pure logic: :func:`pzone_ingest.batch.process_batch` brings each device's stored counter and applies the plan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pzone.telemetry import Limits, Reading


@dataclass(slots=True)
class Counter:
    """Where a device's applied readings stand; all None before its first one."""

    epoch: int | None = None
    seq: int | None = None
    measured_at: datetime | None = None
    received_at: datetime | None = None


@dataclass(slots=True)
class SequencePlan:
    advancing: list[Reading] = field(default_factory=list)  # in the order they move the state
    refused: list[tuple[Reading, str]] = field(default_factory=list)  # with the dead letter's reason
    epoch_switches: int = 0


def allowed_jump(limits: Limits, elapsed_s: float) -> float:
    """How far a sequence number may run ahead of the last applied one, ``elapsed_s`` after it was received."""
    return limits.seq_jump_floor + limits.seq_jump_per_s * max(0.0, elapsed_s)


def plan_device(readings: Sequence[Reading], counter: Counter, limits: Limits) -> SequencePlan:
    """The plan for one device's new readings (duplicates already removed) against its stored ``counter``."""
    plan = SequencePlan()
    state = Counter(counter.epoch, counter.seq, counter.measured_at, counter.received_at)
    by_epoch: dict[int, list[Reading]] = defaultdict(list)
    for reading in readings:
        by_epoch[reading.epoch].append(reading)
    # The current epoch first; other epochs in the order they were measured, so a reflash in mid-batch wins.
    order = sorted(
        by_epoch,
        key=lambda e: (e != state.epoch, max(r.measured_at for r in by_epoch[e]), e),
    )
    for epoch in order:
        group = sorted(by_epoch[epoch], key=lambda r: r.seq)
        if state.epoch is not None and epoch != state.epoch:
            newest = max(r.measured_at for r in group)
            if state.measured_at is not None and newest < state.measured_at:
                continue  # a straggler of an earlier epoch
            state.epoch, state.seq = epoch, None
            plan.epoch_switches += 1
        state.epoch = epoch
        for reading in group:
            if state.seq is not None and reading.seq <= state.seq:
                continue  # late: stored, changes nothing
            if state.seq is not None:
                elapsed = (
                    (reading.received_at - state.received_at).total_seconds()
                    if state.received_at is not None
                    else 0.0
                )
                allowed = allowed_jump(limits, elapsed)
                if reading.seq - state.seq > allowed:
                    plan.refused.append(
                        (
                            reading,
                            f"seq_jump: seq {reading.seq} is {reading.seq - state.seq} ahead of the last applied "
                            f"{state.seq} (epoch {epoch}); at most {allowed:.0f} are allowed {max(elapsed, 0):.0f} s "
                            "later",
                        )
                    )
                    continue
            plan.advancing.append(reading)
            state.seq, state.measured_at, state.received_at = (
                reading.seq,
                reading.measured_at,
                reading.received_at,
            )
    return plan
