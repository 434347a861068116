"""The MQTT ingest worker against a real Mosquitto and PostgreSQL."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import warnings

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from pzone.db.models import DeadLetter
from pzone_firmware.fleet import run_fleet
from tests.support.ingest import (
    audit,
    expected_from,
    running_worker,
    wait_connected,
    wait_rows,
    worker_process,
    worker_settings,
)
from tests.support.mqtt import Outgoing, fleet_messages, publish_all, reading_payload
from tests.support.services import MosquittoBroker, free_port

pytestmark = pytest.mark.integration


def test_stream_through_broker_to_rows_every_sequence_once(broker: MosquittoBroker, pg_url: str) -> None:
    messages = fleet_messages("zone-1", devices=20, per_device=100)
    with running_worker(worker_settings(pg_url, broker.url)) as worker:
        publish_all(broker.url, messages)
        assert wait_rows(pg_url, len(messages)) == len(messages)
    result = audit(pg_url, expected_from(messages))
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0)
    assert worker.stats.totals.inserted == len(messages)
    assert worker.stats.batches < len(messages) / 10  # it really batches


def test_simulated_fleet_through_broker_and_worker_every_sequence_once(
    broker: MosquittoBroker, pg_url: str
) -> None:
    with running_worker(worker_settings(pg_url, broker.url)):
        stats = run_fleet(
            broker.url, count=6, rate_hz=20, duration_s=3, zone_id="zone-9", seed=3, faulty_ratio=0.1
        )
        expected = {device_id: set(device.acked_seqs) for device_id, device in stats.devices.items()}
        total = sum(len(seqs) for seqs in expected.values())
        assert total >= 6 * 40 and stats.undelivered == 0
        assert wait_rows(pg_url, total) == total
    result = audit(pg_url, expected)
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0)
    for seqs in expected.values():  # contiguous: no sequence number skipped by the firmware logic
        assert seqs == set(range(min(seqs), max(seqs) + 1))
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        dead = conn.execute(text("SELECT count(*) FROM ingest_dead_letters")).scalar_one()
    engine.dispose()
    assert dead == stats.faulty_injected > 0


def test_works_on_sqlite_and_mqtt_311_without_shared_subscription(
    broker: MosquittoBroker, sqlite_url: str
) -> None:
    messages = fleet_messages("zone-1", devices=3, per_device=50)
    settings = worker_settings(sqlite_url, broker.url, mqtt_protocol="3.1.1", ingest_shared_group="")
    with running_worker(settings):
        publish_all(broker.url, messages)
        assert wait_rows(sqlite_url, len(messages)) == len(messages)
    assert audit(sqlite_url, expected_from(messages)).lost == 0


def test_replayed_messages_make_no_duplicate_rows(broker: MosquittoBroker, pg_url: str) -> None:
    messages = fleet_messages("zone-1", devices=5, per_device=40)
    with running_worker(worker_settings(pg_url, broker.url)) as worker:
        publish_all(broker.url, messages)
        assert wait_rows(pg_url, len(messages)) == len(messages)
        publish_all(broker.url, messages, client_id="replayer")  # the same messages again
        deadline = time.monotonic() + 30
        while worker.stats.totals.duplicates < len(messages) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert worker.stats.totals.duplicates == len(messages)
    result = audit(pg_url, expected_from(messages))
    assert (result.rows, result.duplicated) == (len(messages), 0)


BAD_PAYLOADS: list[tuple[str, str, bytes]] = [
    ("not json", "pzone/zone-1/dev-000/tilt", b"tilt=3"),
    ("not utf-8", "pzone/zone-1/dev-000/tilt", b"\xff\xfe\x00\x01"),
    ("empty", "pzone/zone-1/dev-000/tilt", b""),
    ("json array", "pzone/zone-1/dev-000/tilt", b"[1, 2, 3]"),
    ("json null", "pzone/zone-1/dev-000/tilt", b"null"),
    ("NaN token", "pzone/zone-1/dev-000/tilt", b'{"v":1,"seq":900,"ax":NaN,"ay":0,"az":1}'),
    ("Infinity token", "pzone/zone-1/dev-000/tilt", b'{"v":1,"seq":901,"ax":0,"ay":Infinity,"az":1}'),
    ("missing seq", "pzone/zone-1/dev-000/tilt", b'{"v":1,"ax":0,"ay":0,"az":1}'),
    ("missing axis", "pzone/zone-1/dev-000/tilt", b'{"v":1,"seq":902,"ax":0,"ay":0}'),
    ("string axis", "pzone/zone-1/dev-000/tilt", b'{"v":1,"seq":903,"ax":"0","ay":0,"az":1}'),
    ("bool seq", "pzone/zone-1/dev-000/tilt", b'{"v":1,"seq":true,"ax":0,"ay":0,"az":1}'),
    ("negative seq", "pzone/zone-1/dev-000/tilt", b'{"v":1,"seq":-4,"ax":0,"ay":0,"az":1}'),
    ("unknown version", "pzone/zone-1/dev-000/tilt", b'{"v":7,"seq":904,"ax":0,"ay":0,"az":1}'),
    ("missing version", "pzone/zone-1/dev-000/tilt", b'{"seq":905,"ax":0,"ay":0,"az":1}'),
    ("zero vector", "pzone/zone-1/dev-000/tilt", b'{"v":1,"seq":906,"ax":0,"ay":0,"az":0}'),
    ("beyond sensor range", "pzone/zone-1/dev-000/tilt", b'{"v":1,"seq":907,"ax":0,"ay":0,"az":99}'),
    (
        "battery out of range",
        "pzone/zone-1/dev-000/tilt",
        b'{"v":1,"seq":908,"ax":0,"ay":0,"az":1,"battery":-3}',
    ),
    (
        "timestamp in ms",
        "pzone/zone-1/dev-000/tilt",
        b'{"v":1,"seq":909,"ts":1764070000000,"ax":0,"ay":0,"az":1}',
    ),
    (
        "device id mismatch",
        "pzone/zone-1/dev-000/tilt",
        b'{"v":1,"device_id":"dev-999","seq":910,"ax":0,"ay":0,"az":1}',
    ),
    (
        "400-digit integer",
        "pzone/zone-1/dev-000/tilt",
        b'{"v":1,"seq":915,"ax":1' + b"0" * 400 + b',"ay":0,"az":1}',
    ),
    ("huge payload", "pzone/zone-1/dev-000/tilt", b'{"v":1,"pad":"' + b"x" * 200_000 + b'"}'),
    ("wrong topic shape", "pzone/zone-1/tilt", reading_payload("dev-000", 911)),
    ("too deep topic", "pzone/zone-1/dev-000/extra/tilt", reading_payload("dev-000", 912)),
    ("bad device id in topic", "pzone/zone-1/dev$000/tilt", reading_payload("dev$000", 913)),
    ("unknown kind", "pzone/zone-1/dev-000/temperature", reading_payload("dev-000", 914)),
    ("bad status", "pzone/zone-1/dev-000/status", b'{"v":1,"status":"sleeping"}'),
]


def test_bad_payloads_become_dead_letters_and_good_ones_around_them_are_stored(
    broker: MosquittoBroker, pg_url: str
) -> None:
    good = fleet_messages("zone-1", devices=1, per_device=len(BAD_PAYLOADS) + 1)
    interleaved: list[Outgoing] = []
    for i, (_name, topic, payload) in enumerate(BAD_PAYLOADS):
        interleaved += [good[i], Outgoing(topic, payload)]
    interleaved.append(good[-1])
    with running_worker(worker_settings(pg_url, broker.url)) as worker:
        publish_all(broker.url, interleaved)
        deadline = time.monotonic() + 30
        while worker.stats.totals.received < len(interleaved) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert audit(pg_url, expected_from(good)).lost == 0
    engine = create_engine(pg_url)
    with Session(engine) as session:
        letters = session.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
    engine.dispose()
    assert len(letters) == len(BAD_PAYLOADS)
    by_topic_and_size = {(letter.topic, letter.payload_size) for letter in letters}
    for name, topic, payload in BAD_PAYLOADS:
        assert (topic, len(payload)) in by_topic_and_size, name  # the whole size, however little is kept
    assert max(len(letter.raw_payload) for letter in letters if "exceeds" in letter.reason) <= 1024
    reasons = " | ".join(letter.reason for letter in letters)
    for fragment in (
        "not valid JSON",
        "not UTF-8",
        "must be a JSON object",
        "exceeds",
        "does not match",
        "version",
    ):
        assert fragment in reasons
    assert len({letter.reason for letter in letters}) >= 15


def scrape(port: int) -> dict[str, float]:
    """The worker's Prometheus endpoint as {sample name: value} (samples without labels)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


def scrape_until(port: int, expected: dict[str, float], timeout: float = 15) -> dict[str, float]:
    """Scrape until the samples in ``expected`` have those values (or time runs out); returns the last scrape."""
    deadline = time.monotonic() + timeout
    metrics = scrape(port)
    while any(metrics.get(k) != v for k, v in expected.items()) and time.monotonic() < deadline:
        time.sleep(0.1)
        metrics = scrape(port)
    return metrics


def test_metrics_endpoint(broker: MosquittoBroker, pg_url: str) -> None:
    port = free_port()
    messages = fleet_messages("zone-1", devices=2, per_device=10)
    with running_worker(worker_settings(pg_url, broker.url, ingest_metrics_port=port)):
        publish_all(broker.url, [*messages, Outgoing("pzone/zone-1/dev-000/tilt", b"junk")])
        wait_rows(pg_url, len(messages))
        first = scrape_until(
            port, {"pzone_ingest_received_total": len(messages) + 1, "pzone_ingest_dead_letters_total": 1}
        )
        assert first["pzone_ingest_received_total"] == len(messages) + 1
        assert first["pzone_ingest_inserted_total"] == len(messages)
        assert first["pzone_ingest_dead_letters_total"] == 1
        assert first["pzone_ingest_duplicates_total"] == 0
        assert first["pzone_ingest_batch_seconds_count"] >= 1
        # A replayed reading counts as a duplicate (no new row), an off-contract one as a dead letter.
        invalid = json.loads(reading_payload("dev-001", 11))
        invalid["seq"] = -1
        publish_all(
            broker.url,
            [messages[0], Outgoing("pzone/zone-1/dev-001/tilt", json.dumps(invalid).encode())],
            client_id="replayer",
        )
        second = scrape_until(
            port, {"pzone_ingest_duplicates_total": 1, "pzone_ingest_dead_letters_total": 2}
        )
    assert second["pzone_ingest_received_total"] == len(messages) + 3
    assert second["pzone_ingest_inserted_total"] == len(messages)
    assert second["pzone_ingest_duplicates_total"] == 1
    assert second["pzone_ingest_dead_letters_total"] == 2
    assert second["pzone_ingest_batch_seconds_count"] > first["pzone_ingest_batch_seconds_count"]
    assert wait_rows(pg_url, len(messages) + 1, timeout=0) == len(messages)


@pytest.mark.slow
def test_sigterm_drains_and_a_restart_loses_nothing(broker: MosquittoBroker, pg_url: str) -> None:
    messages = fleet_messages("zone-1", devices=10, per_device=300)
    process = worker_process(pg_url, broker.url, "drain-worker")
    wait_connected(process)
    publish_all(broker.url, messages[: len(messages) // 2])
    wait_rows(pg_url, 200)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "draining" in output and "ingest stopped" in output
    publish_all(
        broker.url, messages[len(messages) // 2 :]
    )  # arrives while no worker runs: the session keeps it
    restarted = worker_process(pg_url, broker.url, "drain-worker")
    try:
        wait_connected(restarted)
        assert wait_rows(pg_url, len(messages)) == len(messages)
    finally:
        restarted.send_signal(signal.SIGTERM)
        rest, _ = restarted.communicate(timeout=40)
        if restarted.returncode != 0:
            # Seen once under load: the drain of an idle worker did not finish and the stop watchdog ended it
            # (exit 3, stacks in the output). Nothing is lost that way; keep the evidence visible.
            warnings.warn(f"restarted worker exited {restarted.returncode}:\n{rest}", stacklevel=1)
    result = audit(pg_url, expected_from(messages))
    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0)


def test_status_topic_marks_devices_online(broker: MosquittoBroker, pg_url: str) -> None:
    messages = [
        Outgoing("pzone/zone-1/dev-000/tilt", reading_payload("dev-000", 1)),
        Outgoing("pzone/zone-1/dev-000/status", json.dumps({"v": 1, "status": "online"}).encode()),
    ]
    with running_worker(worker_settings(pg_url, broker.url)) as worker:
        publish_all(broker.url, messages)
        deadline = time.monotonic() + 20
        while worker.stats.totals.statuses < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT status FROM devices WHERE id = 'dev-000'")).scalar_one() == "online"
    engine.dispose()


def test_a_message_the_database_rejects_is_dead_lettered_and_the_batch_kept(
    broker: MosquittoBroker, pg_url: str
) -> None:
    """A row that passes validation but that the database refuses (here: a trigger) must not block the stream."""
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(
            text(
                "CREATE FUNCTION refuse_666() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.seq = 666 THEN RAISE EXCEPTION 'seq 666 refused'; END IF; RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON sensor_readings FOR EACH ROW EXECUTE FUNCTION refuse_666()"
            )
        )
    engine.dispose()
    good = [Outgoing("pzone/zone-1/dev-000/tilt", reading_payload("dev-000", seq)) for seq in range(660, 672)]
    with running_worker(worker_settings(pg_url, broker.url, ingest_batch_max_wait_ms=300)) as worker:
        publish_all(broker.url, good)
        deadline = time.monotonic() + 30
        while worker.stats.totals.received < len(good) and time.monotonic() < deadline:
            time.sleep(0.1)
    expected = expected_from(good)
    expected["dev-000"].discard(666)
    result = audit(pg_url, expected)
    assert (result.lost, result.rows) == (0, len(good) - 1)
    engine = create_engine(pg_url)
    with Session(engine) as session:
        letter = session.scalars(select(DeadLetter)).one()
    engine.dispose()
    assert "database rejected" in letter.reason and "seq 666 refused" in letter.reason
    assert json.loads(letter.raw_payload)["seq"] == 666
