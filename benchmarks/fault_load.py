"""The steady load of ``benchmarks/faults.py`` and what is checked afterwards.

* :class:`Fleet`: simulated tilt nodes (the firmware's own ``TiltNode`` with the CPython HAL, through
  :func:`pzone_firmware.fleet.run_fleet`) on the private broker; every sequence number whose PUBACK a device got is
  recorded with the time it was seen, and each device's epoch is read back from its "flash" with the firmware's
  own :class:`~pzone_firmware.delivery.SequenceLease`.
* :class:`PhotoClient`: one signed-in user uploading small real JPEGs through the API, alternating the direct path
  (create → PUT to the presigned URL → complete) and the multipart one; every API request's time and status is
  recorded, and every upload the API accepted (a 2xx on complete or upload) with the SHA-256 of its bytes.
* :func:`audit_readings`, :func:`audit_photos`: the invariants, read from PostgreSQL, the API and S3.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import bindparam, create_engine, text

from pzone.tilt import TILT_CLASSES
from pzone_firmware.delivery import SequenceLease
from pzone_firmware.fleet import FleetStats, run_fleet
from pzone_firmware.hal_cpython import FolderStorage
from tests.support.api import CSRF_HEADER
from tests.support.images import photo_jpeg

Clock = Callable[[], float]
Key = tuple[str, int, int]  # (device_id, epoch, seq): the readings' unique key
ZONE_ID = "faults-zone"
DEVICE_PREFIX = "faults"


# --- the fleet ----------------------------------------------------------------------------------------------------
class Fleet:
    """``run_fleet`` in a thread until :meth:`finish`; then each device flushes its buffer and disconnects."""

    def __init__(
        self, mqtt_url: str, count: int, rate_hz: float, state_dir: Path, now: Clock, seed: int
    ) -> None:
        self.mqtt_url, self.count, self.rate_hz, self.state_dir, self.now = (
            mqtt_url,
            count,
            rate_hz,
            state_dir,
            now,
        )
        self.seed = seed
        self.stop_event = threading.Event()
        # (device, seq) -> (t0, t1]: the PUBACK came between two snapshots of the fleet
        self.ack_times: dict[tuple[str, int], tuple[float, float]] = {}
        self._seen: dict[str, int] = {}
        self._last_snapshot = 0.0
        self.result: FleetStats | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)

    @property
    def device_ids(self) -> list[str]:
        return [f"{DEVICE_PREFIX}-{ZONE_ID}-{i:04d}" for i in range(self.count)]

    def start(self) -> None:
        self._last_snapshot = self.now()
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = run_fleet(
                self.mqtt_url,
                self.count,
                self.rate_hz,
                duration_s=24 * 3600.0,  # until stopped
                zone_id=ZONE_ID,
                seed=self.seed,
                device_prefix=DEVICE_PREFIX,
                state_dir=self.state_dir,
                stop_event=self.stop_event,
                on_progress=self._progress,
                flush_timeout_s=20.0,
                progress_interval_s=0.5,
            )
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def _progress(self, stats: FleetStats) -> None:
        now = self.now()
        for device_id, device in stats.devices.items():
            seen = self._seen.get(device_id, 0)
            for seq in device.acked_seqs[
                seen:
            ]:  # in the order the broker acknowledged them; only ever appended
                self.ack_times[(device_id, seq)] = (self._last_snapshot, now)
            self._seen[device_id] = len(device.acked_seqs)
        self._last_snapshot = now

    def acked(self) -> int:
        return sum(self._seen.values())

    def finish(self, timeout_s: float = 60.0) -> FleetStats:
        self.stop_event.set()
        self._thread.join(timeout_s)
        if self.error is not None:
            raise RuntimeError(f"the fleet failed: {self.error!r}") from self.error
        if self.result is None:
            raise TimeoutError(f"the fleet did not stop within {timeout_s}s")
        return self.result

    def acked_keys(self, stats: FleetStats) -> set[Key]:
        """Every reading a device got a PUBACK for, keyed as the table is (the epoch from the device's flash)."""
        keys: set[Key] = set()
        for device_id, device in stats.devices.items():
            epoch = SequenceLease(FolderStorage(self.state_dir / device_id)).epoch
            keys.update((device_id, epoch, seq) for seq in device.acked_seqs)
        return keys


def stored_readings(database_url: str) -> list[Key]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT device_id, epoch, seq FROM sensor_readings WHERE device_id LIKE :prefix"),
                {"prefix": f"{DEVICE_PREFIX}-%"},
            ).all()
    finally:
        engine.dispose()
    return [(str(d), int(e), int(s)) for d, e, s in rows]


def audit_readings(
    database_url: str, acked: set[Key], deadline_s: float, log: Callable[[str], None]
) -> dict[str, Any]:
    """Wait (bounded) until the ingest worker has stored what the devices got acknowledged, then compare: lost =
    acknowledged and not stored, duplicated = rows beyond one per key, unacknowledged = stored, never acknowledged
    (a PUBACK lost in a fault: the device sent it again, or it was stored before the broker died)."""
    deadline = time.monotonic() + deadline_s
    last_count, still_since = -1, time.monotonic()
    while True:
        rows = stored_readings(database_url)
        missing = acked - set(rows)
        if len(rows) != last_count:
            last_count, still_since = len(rows), time.monotonic()
        # Nothing moving for 4 s with the worker's 200 ms batches: what is missing now is not coming.
        if not missing or time.monotonic() - still_since > 4.0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    distinct = set(rows)
    if missing:
        log(f"readings: {len(missing)} acknowledged readings are not stored")
    return {
        "readings_acked": len(acked),
        "readings_stored": len(distinct & acked),
        "readings_lost": len(missing),
        "readings_duplicated": len(rows) - len(distinct),
        "readings_stored_unacked": len(distinct - acked),
        "readings_rows": len(rows),
        "missing": sorted(missing),
    }


# --- the photo client ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApiRequest:
    start: float
    end: float
    what: str
    status: int | None  # None: no answer (connection refused or reset)
    code: str | None = None  # the refusal's detail.code, when there is one


@dataclass(frozen=True)
class Accepted:
    photo_id: str
    path: str  # "direct" or "multipart"
    sha256: str  # of the bytes the client sent
    at: float
    status: int


@dataclass
class PhotoClient:
    """One user uploading in a loop until stopped (a thread); keeps going through every fault, signing in again
    whenever its session is gone (Redis keeps sessions without persistence)."""

    base_url: str
    device_ids: list[str]
    now: Clock
    pause_s: float
    seed: int
    email: str = "faults@example.com"
    password: str = "a long enough password"
    requests: list[ApiRequest] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)
    attempts: int = 0
    s3_put_failures: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop_event = threading.Event()
        self._client = httpx.Client(base_url=self.base_url, timeout=30.0)
        self._storage = httpx.Client(timeout=30.0)  # the presigned PUT goes to S3: no API cookies
        self._csrf: str | None = None
        self._signed_up = False
        self._thread = threading.Thread(target=self._loop, name="photo-client", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self.stop_event.set()
        self._thread.join(120)

    def close(self) -> None:
        self._client.close()
        self._storage.close()

    # requests ------------------------------------------------------------------------------------------------------
    def call(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response | None:
        headers = {CSRF_HEADER: self._csrf} if self._csrf and method != "GET" else {}
        started = self.now()
        try:
            response = self._client.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError:
            self.requests.append(ApiRequest(started, self.now(), what, None))
            return None
        code = None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
                code = detail.get("code") if isinstance(detail, dict) else None
            except ValueError:
                code = None
        self.requests.append(ApiRequest(started, self.now(), what, response.status_code, code))
        if response.status_code == 401:
            self._csrf = None  # the session is gone (Redis was emptied): sign in again
        return response

    def signed_in(self) -> bool:
        if self._csrf is not None:
            return True
        body = {"email": self.email, "password": self.password}
        if self._signed_up:
            response = self.call("POST", "/api/auth/login", "login", json=body)
        else:
            response = self.call("POST", "/api/auth/signup", "signup", json=body)
            if response is not None and response.status_code == 409:  # the account exists: an answer got lost
                self._signed_up = True
                return False
        if response is None or response.status_code not in (200, 201):
            return False
        self._signed_up = True
        self._csrf = str(response.json()["csrf_token"])
        return True

    # the loop ------------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        n = 0
        while not self.stop_event.is_set():
            try:
                if self.signed_in():
                    n += 1
                    self._upload(n)
                    self.call("GET", "/api/photos", "list", params={"page_size": 5})
            except Exception as exc:  # the load must go on; the report shows what broke
                self.errors.append(repr(exc))
            self.stop_event.wait(self.pause_s)

    def _upload(self, n: int) -> None:
        data = photo_jpeg(320, 240, seed=self.seed * 1_000_000 + n)
        sha = hashlib.sha256(data).hexdigest()
        device_id = self.device_ids[n % len(self.device_ids)]
        self.attempts += 1
        if n % 2:
            self._direct(data, sha, device_id)
        else:
            response = self.call(
                "POST",
                "/api/photos/upload",
                "upload",
                files={"file": (f"p{n}.jpg", data, "image/jpeg")},
                data={"device_id": device_id},
            )
            self._accept(response, "multipart", sha)

    def _direct(self, data: bytes, sha: str, device_id: str) -> None:
        body = {"device_id": device_id, "content_type": "image/jpeg", "size": len(data)}
        created = self.call("POST", "/api/photos", "create", json=body)
        if created is None or created.status_code != 201:
            return
        ticket = created.json()
        try:
            put = self._storage.put(
                ticket["upload"]["url"], content=data, headers=ticket["upload"]["headers"]
            )
            put.raise_for_status()
        except httpx.HTTPError:
            self.s3_put_failures += 1
            return
        photo_id = ticket["photo"]["id"]
        # A client asks again while the API or a service behind it is away (a 503 says when), as the web UI does.
        for _ in range(6):
            response = self.call("POST", f"/api/photos/{photo_id}/complete", "complete")
            if response is not None and response.status_code < 500 and response.status_code != 401:
                self._accept(response, "direct", sha)
                return
            if response is not None and response.status_code == 401:
                self.signed_in()
            if self.stop_event.wait(1.0):
                return

    def _accept(self, response: httpx.Response | None, path: str, sha: str) -> None:
        if response is not None and response.status_code in (200, 201, 202):
            self.accepted.append(Accepted(response.json()["id"], path, sha, self.now(), response.status_code))


def audit_photos(
    client: PhotoClient,
    database_url: str,
    s3: Any,
    bucket: str,
    outcome: Callable[[str], Any],
    deadline_s: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Each accepted upload, polled through the API (bounded) until terminal: stored with a verdict (one of the
    tilt classes), or refused (404: the row is gone; its reason is the job's outcome, read from the queue). Then
    every stored photo's original is read back from S3 and hashed."""
    pending = {a.photo_id: a for a in client.accepted}
    stored: dict[str, dict[str, Any]] = {}
    refused: dict[str, str] = {}
    deadline = time.monotonic() + deadline_s
    while pending and time.monotonic() < deadline:
        if not client.signed_in():
            time.sleep(0.5)
            continue
        for photo_id in list(pending):
            response = client.call("GET", f"/api/photos/{photo_id}", "audit")
            if response is None:
                continue
            if response.status_code == 404:
                found = outcome(photo_id)
                refused[photo_id] = (
                    str(found.get("code")) if found else "unknown (no outcome left in the queue)"
                )
                del pending[photo_id]
            elif response.status_code == 200:
                photo = response.json()
                if photo["status"] == "stored" and photo["verdict"] in TILT_CLASSES:
                    stored[photo_id] = photo
                    del pending[photo_id]
        if pending:
            time.sleep(1.0)
    not_terminal = _describe(database_url, pending) if pending else {}
    if not_terminal:
        log(f"photos: {len(not_terminal)} accepted uploads are not terminal: {not_terminal}")
    sent = {a.photo_id: a.sha256 for a in client.accepted}
    mismatched, missing = _check_originals(database_url, s3, bucket, {i: sent[i] for i in stored})
    reasons: dict[str, int] = {}
    for code in refused.values():
        reasons[code] = reasons.get(code, 0) + 1
    return {
        "uploads_accepted": len(client.accepted),
        "uploads_terminal": len(stored) + len(refused),
        "uploads_stored": len(stored),
        "uploads_refused": len(refused),
        "uploads_refused_reasons": reasons,
        "uploads_not_terminal": not_terminal,
        "originals_checked": len(stored),
        "originals_mismatched": len(mismatched) + len(missing),
        "originals_missing": len(missing),
        "mismatched": sorted(mismatched) + sorted(missing),
    }


def _describe(database_url: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Where each photo that is not terminal stands in the database (for the report)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, status, verdict, processing_at, worker_lease_until FROM photos WHERE id IN :ids"
                ).bindparams(bindparam("ids", expanding=True)),
                {"ids": sorted(ids)},
            ).all()
    finally:
        engine.dispose()
    found = {
        str(r.id): {
            "status": r.status,
            "verdict": r.verdict,
            "processing_at": str(r.processing_at),
            "lease": str(r.worker_lease_until),
        }
        for r in rows
    }
    return {i: found.get(i, {"status": "no row"}) for i in ids}


def _check_originals(
    database_url: str, s3: Any, bucket: str, sent: dict[str, str]
) -> tuple[list[str], list[str]]:
    """(mismatched, missing): stored photos whose original in S3 hashes to something other than the recorded
    SHA-256, or whose recorded SHA-256 is not that of the bytes the client sent; originals that are not there."""
    if not sent:
        return [], []
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, sha256, original_key FROM photos WHERE id IN :ids").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": sorted(sent)},
            ).all()
    finally:
        engine.dispose()
    mismatched, missing = [], []
    for photo_id, recorded, key in rows:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            missing.append(str(photo_id))
            continue
        if hashlib.sha256(body).hexdigest() != recorded or recorded != sent[str(photo_id)]:
            mismatched.append(str(photo_id))
    missing += sorted(set(sent) - {str(r[0]) for r in rows})  # stored through the API, yet no row now
    return mismatched, missing
