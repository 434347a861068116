"""Labels from telemetry (pzone.labels): the pure decision, the refresh on PostgreSQL and SQLite, manual labels, 0003."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, inspect, select
from sqlalchemy.orm import Session

from pzone.db.engine import make_engine
from pzone.db.models import Photo, PhotoLabel, SensorReading, table_of
from pzone.db.readonly import read_only_engine
from pzone.labels import (
    LabelParams,
    ReadingPoint,
    effective_label,
    label_for,
    labeled_photos,
    reading_time,
    refresh_labels,
    set_manual_label,
    time_is_proven,
)
from pzone.migrations import current, downgrade, upgrade
from tests.support.api import create_user_in_db
from tests.support.labels import (
    PASSWORD,
    T,
    add_device_row,
    at,
    label_scene,
    photo_row,
    reading_row,
)

P = LabelParams()  # window 30 s, skew 300 s, spread 10°, 20° / 60°


def point(rid: int, tilt: float, received_s: float, device_s: float | None = None) -> ReadingPoint:
    """A reading received ``received_s`` after T whose device clock said ``device_s`` after T (None: no clock)."""
    return ReadingPoint(rid, tilt, at(received_s), None if device_s is None else at(device_s))


# --- the pure decision ------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_exact_match() -> None:
    decision = label_for(T, [point(1, 3.0, 0.4, 0.0)], P)
    assert decision.label == "upright" and decision.reason == "ok"
    assert decision.reading_id == 1 and decision.gap_s == 0.0 and decision.readings_in_window == 1
    assert decision.angle_deg == 3.0
    assert decision.quality is not None and 0.9 < decision.quality <= 1.0


@pytest.mark.unit
def test_nearest_reading_in_the_window_is_kept() -> None:
    readings = [
        point(1, 41.0, -20, -20),
        point(2, 43.0, 8, 8),
        point(3, 80.0, 100, 100),
        point(4, 5.0, -95, -95),
    ]
    decision = label_for(T, readings, P)
    assert decision.label == "tilted"
    assert (decision.reading_id, decision.gap_s, decision.readings_in_window) == (2, 8.0, 2)
    # the further from the photo, the lower the quality
    far = label_for(T, [point(5, 43.0, 25, 25)], P)
    assert far.label == "tilted" and far.quality is not None and decision.quality is not None
    assert far.quality < decision.quality


@pytest.mark.unit
def test_no_reading_in_the_window() -> None:
    assert label_for(T, [], P).reason == "no_reading_in_window"
    decision = label_for(T, [point(1, 3.0, 31, 31), point(2, 3.0, -31, -31)], P)
    assert decision.label is None and decision.reason == "no_reading_in_window"
    assert decision.reading_id is None and decision.quality is None and decision.readings_in_window == 0
    assert label_for(None, [point(1, 3.0, 0, 0)], P).reason == "no_taken_at"


@pytest.mark.unit
def test_readings_that_disagree_give_no_label() -> None:
    # classes differ (the object was falling), though the angles are only 8° apart
    moving = label_for(T, [point(1, 16.0, -5, -5), point(2, 24.0, 5, 5)], P)
    assert moving.label is None and moving.reason == "readings_disagree" and moving.readings_in_window == 2
    assert moving.reading_id == 1  # the evidence is kept: equal gaps, lower id first
    # one class (fallen) but the angle spread exceeds max_spread_deg
    swinging = label_for(T, [point(1, 65.0, -5, -5), point(2, 88.0, 5, 5)], P)
    assert swinging.label is None and swinging.reason == "readings_disagree"
    # within the spread: a label, with less quality than a still object
    steady = label_for(T, [point(1, 84.0, -5, -5), point(2, 88.0, 5, 5)], P)
    still = label_for(T, [point(1, 86.0, -5, -5), point(2, 86.0, 5, 5)], P)
    assert steady.label == still.label == "fallen"
    assert steady.quality is not None and still.quality is not None and steady.quality < still.quality


@pytest.mark.unit
def test_skewed_device_clock_matches_by_server_time() -> None:
    ahead = point(1, 85.0, 2, 3600 + 2)  # the device clock an hour ahead, received 2 s after the photo
    behind = point(2, 85.0, -3, -3600 - 3)
    assert reading_time(ahead, P.max_clock_skew_s) == at(2)
    for reading, gap in ((ahead, 2.0), (behind, 3.0)):
        decision = label_for(T, [reading], P)
        assert decision.label == "fallen" and decision.gap_s == gap
    # a reading buffered offline for 200 s with a sane clock keeps its true time
    buffered = point(3, 4.0, 200, 0.5)
    assert reading_time(buffered, P.max_clock_skew_s) == at(0.5)
    assert label_for(T, [buffered], P).gap_s == 0.5
    # an hour-off clock would otherwise hide the reading from the photo, and move another into its window
    wrong = point(4, 85.0, 3600, 0)
    assert label_for(T, [wrong], P).reason == "no_reading_in_window"


@pytest.mark.unit
def test_missing_device_timestamp_uses_the_receive_time() -> None:
    decision = label_for(T, [point(1, 50.0, 4)], P)
    assert decision.label == "tilted" and decision.gap_s == 4.0


@pytest.mark.unit
def test_naive_datetimes_are_utc() -> None:
    naive = ReadingPoint(1, 3.0, at(1).replace(tzinfo=None), None)
    assert label_for(T.replace(tzinfo=None), [naive], P).gap_s == 1.0
    assert label_for(T, [naive], P).gap_s == 1.0


@pytest.mark.unit
@pytest.mark.parametrize(
    ("tilt", "label"),
    [
        (0.0, "upright"),
        (19.999, "upright"),
        (20.0, "tilted"),
        (59.999, "tilted"),
        (60.0, "fallen"),
        (180, "fallen"),
    ],
)
def test_thresholds_at_the_boundaries(tilt: float, label: str) -> None:
    decision = label_for(T, [point(1, tilt, 0, 0)], P)
    assert decision.label == label
    assert decision.quality is not None and 0.0 <= decision.quality <= 1.0


@pytest.mark.unit
def test_quality_falls_near_a_threshold_and_at_the_window_edge() -> None:
    def quality(tilt: float, gap: float) -> float:
        value = label_for(T, [point(1, tilt, gap, gap)], P).quality
        assert value is not None
        return value

    assert quality(0.0, 0) == 1.0 and quality(40.0, 0) == 1.0 and quality(90.0, 0) == 1.0
    assert quality(20.0, 0) == pytest.approx(0.7)  # on the threshold: no margin
    assert quality(0.0, 30) == pytest.approx(0.6)  # at the window's edge
    assert quality(19.0, 0) < quality(10.0, 0) < quality(0.0, 0)


@pytest.mark.unit
def test_min_readings() -> None:
    params = LabelParams(min_readings=2)
    lonely = label_for(T, [point(1, 3.0, 1, 1)], params)
    assert lonely.label is None and lonely.reason == "too_few_readings" and lonely.reading_id == 1
    assert label_for(T, [point(1, 3.0, 1, 1), point(2, 4.0, -9, -9)], params).label == "upright"


@pytest.mark.unit
def test_params_from_mapping() -> None:
    params = LabelParams.from_mapping(
        {
            "window_s": 10,
            "max_clock_skew_s": 60,
            "max_spread_deg": 5,
            "upright_max_deg": 15,
            "fallen_min_deg": 70,
        }
    )
    assert params == LabelParams(10.0, 60.0, 5.0, 15.0, 70.0, 1)
    assert isinstance(params.window_s, float)
    assert LabelParams.from_mapping({}) == LabelParams()
    assert LabelParams.from_mapping({"min_readings": 3.0}).min_readings == 3
    assert params.digest == LabelParams.from_mapping(params.as_dict()).digest
    assert params.digest != LabelParams().digest and len(params.digest) == 64


@pytest.mark.unit
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"window_s": -1}, "window_s must be > 0"),
        ({"window_s": 0}, "window_s must be > 0"),
        ({"max_clock_skew_s": -5}, "max_clock_skew_s must be >= 0"),
        ({"max_spread_deg": -0.1}, "max_spread_deg must be >= 0"),
        ({"upright_max_deg": 60, "fallen_min_deg": 20}, "0 < upright_max_deg < fallen_min_deg <= 180"),
        ({"upright_max_deg": 30, "fallen_min_deg": 30}, "upright_max_deg < fallen_min_deg"),
        ({"upright_max_deg": 0}, "0 < upright_max_deg"),
        ({"fallen_min_deg": 200}, "<= 180"),
        ({"min_readings": 0}, "min_readings must be an integer >= 1"),
        ({"min_readings": 1.5}, "min_readings must be an integer >= 1"),
        ({"window_s": "30"}, "window_s must be a finite number"),
        ({"window_s": True}, "window_s must be a finite number"),
        ({"window_s": math.nan}, "window_s must be a finite number"),
        ({"window": 30}, "unknown labels parameter(s) window"),
    ],
)
def test_bad_params_are_clear_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LabelParams.from_mapping(values)


@pytest.mark.unit
def test_bad_params_mapping_type() -> None:
    with pytest.raises(ValueError, match="must be a mapping"):
        LabelParams.from_mapping([("window_s", 3)])  # type: ignore[arg-type]


# --- the database -----------------------------------------------------------------------------------------------------


@pytest.fixture
def scene(engine: Engine, db_url: str) -> dict[str, Any]:
    return label_scene(engine, db_url)


def labels_by_photo(engine: Engine) -> dict[str, PhotoLabel]:
    with Session(engine, expire_on_commit=False) as s:
        return {row.photo_id: row for row in s.scalars(select(PhotoLabel))}


@pytest.mark.integration
def test_refresh_labels_every_case(engine: Engine, scene: dict[str, Any]) -> None:
    photos = scene["photos"]
    with Session(engine, expire_on_commit=False) as s:
        stats = refresh_labels(s, P)
        s.commit()
    assert stats.photos == 8 and stats.labeled == 4 and stats.unlabeled == 4 and stats.manual == 0
    assert stats.labels == {"fallen": 2, "tilted": 1, "upright": 1}
    assert stats.reasons == {
        "no_device": 1,
        "no_reading_in_window": 1,
        "no_taken_at": 1,
        "ok": 4,
        "readings_disagree": 1,
    }
    rows = labels_by_photo(engine)
    assert photos["awaiting"] not in rows  # only stored photos are labeled
    got = {name: (rows[pid].label, rows[pid].reason) for name, pid in photos.items() if pid in rows}
    assert got == {
        "exact": ("upright", "ok"),
        "quiet": (None, "no_reading_in_window"),
        "moving": (None, "readings_disagree"),
        "skewed": ("fallen", "ok"),
        "buffered": ("tilted", "ok"),
        "noclock": ("fallen", "ok"),
        "no_device": (None, "no_device"),
        "no_taken_at": (None, "no_taken_at"),
    }
    exact = rows[photos["exact"]]
    assert exact.reading_id == scene["readings"][0] and exact.gap_s == 0.0 and exact.readings_in_window == 2
    assert exact.angle_deg == 3.0 and exact.quality is not None and 0.9 < exact.quality <= 1
    assert exact.source == "sensor" and exact.params_hash == P.digest and exact.computed_at is not None
    assert rows[photos["skewed"]].gap_s == pytest.approx(5.0)
    assert rows[photos["buffered"]].gap_s == pytest.approx(1.0)
    assert rows[photos["moving"]].readings_in_window == 2


@pytest.mark.integration
def test_refresh_recomputes_with_new_params_and_subsets(engine: Engine, scene: dict[str, Any]) -> None:
    photos = scene["photos"]
    with Session(engine, expire_on_commit=False) as s:
        refresh_labels(s, P)
        s.commit()
    narrow = LabelParams(window_s=3.0)
    with Session(engine, expire_on_commit=False) as s:
        stats = refresh_labels(s, narrow, photo_ids=[photos["noclock"], photos["exact"], "no-such-photo"])
        s.commit()
    assert stats.photos == 2 and stats.reasons == {"no_reading_in_window": 1, "ok": 1}
    rows = labels_by_photo(engine)
    assert rows[photos["noclock"]].label is None and rows[photos["noclock"]].params_hash == narrow.digest
    assert rows[photos["skewed"]].params_hash == P.digest  # not in the subset: untouched
    with Session(engine, expire_on_commit=False) as s:
        assert refresh_labels(s, P, photo_ids=[]).photos == 0


@pytest.mark.integration
def test_manual_label_wins_survives_refresh_and_clears(
    engine: Engine, scene: dict[str, Any], db_url: str
) -> None:
    photos = scene["photos"]
    operator = create_user_in_db(db_url, "op@example.com", PASSWORD, role="operator")
    with Session(engine, expire_on_commit=False) as s:
        # before any refresh: a row with only the manual label
        row = set_manual_label(s, photos["quiet"], "fallen", operator)
        s.commit()
        assert row is not None and row.reason == "not_computed" and row.computed_at is None
        assert effective_label(row) == "fallen" and row.source == "manual"
        refresh_labels(s, P)
        set_manual_label(s, photos["exact"], "tilted", operator)
        s.commit()
    with Session(engine, expire_on_commit=False) as s:
        stats = refresh_labels(s, P)
        s.commit()
    assert stats.manual == 2 and stats.labeled == 5  # quiet now labeled (manually)
    rows = labels_by_photo(engine)
    exact = rows[photos["exact"]]
    assert exact.label == "upright" and exact.manual_label == "tilted" and effective_label(exact) == "tilted"
    assert exact.manual_by == operator and exact.manual_at is not None and exact.source == "manual"
    quiet = rows[photos["quiet"]]
    assert quiet.reason == "no_reading_in_window" and quiet.manual_label == "fallen"

    with Session(engine, expire_on_commit=False) as s:
        cleared = set_manual_label(s, photos["exact"], None, operator)
        s.commit()
    assert cleared is not None and cleared.manual_label is None and cleared.manual_by is None
    assert cleared.source == "sensor" and effective_label(cleared) == "upright"
    with Session(engine, expire_on_commit=False) as s:
        with pytest.raises(ValueError, match="label must be one of"):
            set_manual_label(s, photos["exact"], "sideways", operator)
        with pytest.raises(LookupError):
            set_manual_label(s, "no-such-photo", "fallen", operator)
        with pytest.raises(LookupError):
            set_manual_label(s, photos["awaiting"], "fallen", operator)
        # clearing where there is no manual label is no error; the sensor's row stays
        assert set_manual_label(s, photos["moving"], None, operator) is not None
        s.execute(PhotoLabel.__table__.delete().where(PhotoLabel.photo_id == photos["no_device"]))
        assert set_manual_label(s, photos["no_device"], None, operator) is None  # no row at all


@pytest.mark.integration
def test_labeled_photos_for_the_snapshot(engine: Engine, scene: dict[str, Any], db_url: str) -> None:
    photos = scene["photos"]
    operator = create_user_in_db(db_url, "op@example.com", PASSWORD, role="operator")
    with Session(engine, expire_on_commit=False) as s:
        refresh_labels(s, P)
        set_manual_label(s, photos["moving"], "tilted", operator)
        s.commit()
        listed = labeled_photos(s)
    assert [p.photo_id for p in listed] == sorted(p.photo_id for p in listed)
    by_id = {p.photo_id: p for p in listed}
    assert set(by_id) == {photos[k] for k in ("exact", "skewed", "buffered", "noclock", "moving")}
    moving = by_id[photos["moving"]]
    assert moving.label == "tilted" and moving.source == "manual" and moving.quality == 1.0
    exact = by_id[photos["exact"]]
    assert exact.label == "upright" and exact.source == "sensor" and exact.device_id == "d-exact"
    assert (
        exact.taken_at == T
        and exact.content_type == "image/jpeg"
        and exact.original_key.startswith("originals/")
    )
    assert len(exact.sha256) == 64
    with Session(engine, expire_on_commit=False) as s:
        strict = labeled_photos(s, min_quality=0.99)
    assert photos["moving"] in {p.photo_id for p in strict}  # manual labels always pass
    assert len(strict) < len(listed)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("source", "lead_s", "proven"),
    [
        ("exif", 30, True),  # taken half a minute before the upload: the photo shows that moment
        ("client", 600, True),  # at the edge of client_time_trusted_s
        ("client", 601, False),  # further back: it could borrow any past reading's label
        ("exif", 2 * 3600, False),
        ("exif", -60, True),  # a client clock a minute ahead
        ("client", -3600, False),  # "taken" an hour after it was sent
        ("upload", 10 * 86400, True),  # the server's clock: not the client's choice
        ("import", 400 * 86400, True),  # an operator's CSV
        (None, 10 * 86400, True),  # photos stored before the source was kept
    ],
)
def test_a_client_chosen_time_picks_a_label_only_near_its_upload(
    source: str | None, lead_s: float, proven: bool
) -> None:
    assert time_is_proven(source, T, T + timedelta(seconds=lead_s), P) is proven
    assert time_is_proven("client", T, None, P) is False  # no upload time to check it against


@pytest.mark.integration
def test_a_label_from_an_unproven_client_time_never_trains(engine: Engine, db_url: str) -> None:
    """The poisoning: a client sets taken_at (or EXIF) to the moment of a reading it wants as its photo's label. The
    label is kept for the operator, with quality 0 and its reason; the repository's snapshot.min_quality leaves it
    out of training, and a photo sent right after it was taken keeps its label."""
    import yaml

    from tests.support.paths import REPO

    user = create_user_in_db(db_url, "eve@example.com", PASSWORD)
    with Session(engine, expire_on_commit=False) as s:
        add_device_row(s, "d-victim")
        s.execute(insert(table_of(SensorReading)), [reading_row("d-victim", 1, 85.0, at(0), at(0))])
        rows = {
            "borrowed": {
                **photo_row(user, "d-victim", T),
                "taken_at_source": "client",
                "created_at": at(7200),
            },
            "backdated_exif": {
                **photo_row(user, "d-victim", T),
                "taken_at_source": "exif",
                "created_at": at(86400),
            },
            "fresh": {**photo_row(user, "d-victim", T), "taken_at_source": "exif", "created_at": at(20)},
            "server_time": {
                **photo_row(user, "d-victim", T),
                "taken_at_source": "upload",
                "created_at": at(9999),
            },
        }
        s.execute(insert(table_of(Photo)), list(rows.values()))
        stats = refresh_labels(s, P)
        s.commit()
        stored = {row.photo_id: row for row in s.scalars(select(PhotoLabel))}
        min_quality = float(yaml.safe_load((REPO / "params.yaml").read_text())["snapshot"]["min_quality"])
        trained = {p.photo_id for p in labeled_photos(s, min_quality=min_quality)}
    assert stats.reasons == {"ok": 2, "client_time_unproven": 2}
    for name in ("borrowed", "backdated_exif"):
        label = stored[rows[name]["id"]]
        assert (label.label, label.reason, label.quality) == ("fallen", "client_time_unproven", 0.0)
    for name in ("fresh", "server_time"):
        assert stored[rows[name]["id"]].reason == "ok" and stored[rows[name]["id"]].quality > 0.5
    assert min_quality > 0 and trained == {rows["fresh"]["id"], rows["server_time"]["id"]}


@pytest.mark.integration
def test_labeled_photos_computed_now_are_a_refresh_without_the_write(
    engine: Engine, scene: dict[str, Any], db_url: str
) -> None:
    """With ``params`` the sensor's labels are computed now (the refresh's own computation) and the operator's read
    from their rows: the list a refresh with those params followed by a read gives, from a read-only engine."""
    photos = scene["photos"]
    operator = create_user_in_db(db_url, "op@example.com", PASSWORD, role="operator")
    narrow = LabelParams(window_s=5)  # the stored rows are computed with 30 s: "noclock" (6 s off) drops out
    with Session(engine, expire_on_commit=False) as s:
        refresh_labels(s, P)
        set_manual_label(s, photos["moving"], "tilted", operator)
        s.commit()
        stale = labeled_photos(s)
    read_only = read_only_engine(db_url)
    try:
        with Session(read_only) as s:
            computed = labeled_photos(s, params=narrow)
            computed_strict = labeled_photos(s, params=narrow, min_quality=0.99)
    finally:
        read_only.dispose()
    assert labeled_photos_rows(engine) == [(p.photo_id, p.label, p.source, p.quality) for p in stale]
    with Session(engine, expire_on_commit=False) as s:
        refresh_labels(s, narrow)
        s.commit()
        assert computed == labeled_photos(s) and computed_strict == labeled_photos(s, min_quality=0.99)
    assert photos["noclock"] in {p.photo_id for p in stale} - {p.photo_id for p in computed}
    assert {p.photo_id: p.source for p in computed}[photos["moving"]] == "manual"


def labeled_photos_rows(engine: Engine) -> list[tuple[str, str, str, float]]:
    """What the stored rows say now (nothing wrote them since the last refresh)."""
    with Session(engine) as s:
        return [(p.photo_id, p.label, p.source, p.quality) for p in labeled_photos(s)]


@pytest.mark.integration
def test_refresh_is_a_few_queries_per_batch_and_fast(engine: Engine, db_url: str) -> None:
    """3,000 photos of 30 devices against 30,000 readings: seconds, and three statements per batch."""
    user = create_user_in_db(db_url, "ana@example.com", PASSWORD)
    devices = [f"dev-{i:02d}" for i in range(30)]
    with Session(engine, expire_on_commit=False) as s:
        for device in devices:
            add_device_row(s, device)
        readings = []
        for i, device in enumerate(devices):
            for seq in range(1000):  # one reading every 5 s, a few seconds of clock skew
                received = at(seq * 5.0)
                tilt = float(((seq // 50) * 13 + i) % 90)  # still for 250 s, then a jump
                readings.append(reading_row(device, seq, tilt, received, received - timedelta(seconds=2)))
        s.execute(insert(table_of(SensorReading)), readings)
        photo_rows = [photo_row(user, devices[n % 30], at((n * 37) % 5000 + 0.5)) for n in range(3000)]
        s.execute(insert(table_of(Photo)), photo_rows)
        s.commit()

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        started = time.perf_counter()
        with Session(engine, expire_on_commit=False) as s:
            stats = refresh_labels(s, P, batch_size=500)
            s.commit()
        elapsed = time.perf_counter() - started
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert stats.photos == 3000 and stats.labeled + stats.unlabeled == 3000
    assert stats.labeled > 0 and stats.reasons.get("readings_disagree", 0) > 0
    work = [
        s
        for s in statements
        if not s.lstrip().upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))
    ]
    assert len(work) == 1 + 2 * 6, len(work)  # the photos' keys, then 6 batches × (readings, upsert)
    assert elapsed < 30, elapsed  # about 1-3 s on a laptop; generous for a shared CI machine
    print(f"refresh of 3000 photos x 30000 readings: {elapsed:.2f} s, {len(work)} statements")


@pytest.mark.integration
def test_deleting_a_photo_deletes_its_label(engine: Engine, scene: dict[str, Any]) -> None:
    photo_id = scene["photos"]["exact"]
    with Session(engine, expire_on_commit=False) as s:
        refresh_labels(s, P, photo_ids=[photo_id])
        s.commit()
        s.execute(Photo.__table__.delete().where(Photo.id == photo_id))
        s.commit()
        assert s.get(PhotoLabel, photo_id) is None


# --- the migration ----------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_migration_0003_upgrade_and_downgrade(db_url: str) -> None:
    def schema() -> tuple[set[str], set[str]]:
        eng = make_engine(db_url)
        try:
            inspector = inspect(eng)
            indexes = {ix["name"] for ix in inspector.get_indexes("sensor_readings") if ix["name"]}
            return set(inspector.get_table_names()), indexes
        finally:
            eng.dispose()

    downgrade(db_url, "0003")  # the fixture migrates to head; later revisions are tested with their own work
    assert current(db_url) == "0003"
    tables, indexes = schema()
    assert "photo_labels" in tables and "ix_sensor_readings_device_received" in indexes
    downgrade(db_url, "0002")
    assert current(db_url) == "0002"
    tables, indexes = schema()
    assert "photo_labels" not in tables and "ix_sensor_readings_device_received" not in indexes
    assert "photos" in tables and "ix_sensor_readings_device_measured" in indexes
    upgrade(db_url, "0003")
    assert current(db_url) == "0003"
    assert "photo_labels" in schema()[0]
    upgrade(db_url)
