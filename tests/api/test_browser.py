"""The web UI in a real browser: Debian's Chromium driven by Playwright against the API in its own uvicorn process.

A new client signs up, uploads a photo (presigned PUT with a progress bar, then complete), then two at once (a
batch: one stored, one refused with its reason), and finds them in the history; an operator logs in and watches the dashboard (devices, an open alarm, the tilt chart, live refresh).
Screenshots go to ``tmp_path`` and, for a person to look at, to ``/tmp/pzone-ui-*.png``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pzone.db.engine import make_engine
from pzone.telemetry import Limits
from pzone_ingest.batch import process_batch
from pzone_ingest.messages import from_iot_event
from tests.support.api import api_process, create_user_in_db

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path("/tmp")
PASSWORD = "correct horse battery"
ALARM_DEVICE, CALM_DEVICE = "scooter-17", "scooter-08"
TIMEOUT_MS = 10_000

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (/usr/bin/chromium; ./dev test installs it)",
    ),
]


def reading(device: str, zone: str, seq: int, tilt: float, ago_s: float) -> dict[str, Any]:
    """One reading as the IoT rule hands it to the Lambda, measured ``ago_s`` seconds ago."""
    rad, now = math.radians(tilt), time.time()
    return {
        "v": 1,
        "device_id": device,
        "topic_device_id": device,
        "zone_id": zone,
        "seq": seq,
        "ts": now - ago_s,
        "ax": math.sin(rad),
        "ay": 0.0,
        "az": math.cos(rad),
        "battery": 81,
        "received_at": int((now - ago_s) * 1000),
    }


def ingest(database_url: str, events: list[dict[str, Any]]) -> dict[str, int]:
    engine = make_engine(database_url)
    try:
        return process_batch(engine, [from_iot_event(e) for e in events], Limits(), source="lambda").as_dict()
    finally:
        engine.dispose()


def jpeg(path: Path, seed: int = 0) -> Path:
    """A small photo-like JPEG: sky, street and a dark 'scooter' bar (``seed``: another sky, other bytes)."""
    image = Image.new("RGB", (800, 600), (135, 180 - 20 * seed, 220))
    image.paste((90, 90, 95), (0, 380, 800, 600))
    image.paste((20, 160, 90), (360, 140, 400, 470))
    image.paste((30, 30, 30), (300, 450, 520, 480))
    image.save(path, "JPEG", quality=85)
    return path


@pytest.fixture
def fleet(pg_url: str) -> str:
    """Two devices from telemetry: one upright, one that fell over (an open alarm); returns the database URL."""
    tilts = [2, 3, 2, 4, 3, 5, 12, 28, 47, 85, 86, 84]
    events = [
        reading(ALARM_DEVICE, "zone-north", seq, tilt, ago_s=(len(tilts) - seq) * 150 + 30)
        for seq, tilt in enumerate(tilts, start=1)
    ]
    events += [
        reading(CALM_DEVICE, "zone-south", seq, 2 + seq % 3, ago_s=900 - seq * 200) for seq in (1, 2, 3, 4)
    ]
    assert ingest(pg_url, events)["alarms_opened"] == 1
    return pg_url


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def shot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    page.screenshot(path=str(SHOTS / f"pzone-ui-{name}.png"), full_page=True)


def test_client_uploads_and_operator_watches_the_dashboard(
    fleet: str, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    for name in ("PZONE_REDIS_URL", "PZONE_MODEL_TIER_URL", "PZONE_S3_BUCKET", "PZONE_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)  # SQL sessions, the local object store, no model tier
    create_user_in_db(fleet, "ops@example.com", PASSWORD, role="operator")
    photo = jpeg(tmp_path / "scooter.jpg")
    env = {
        "PZONE_DATABASE_URL": fleet,
        "PZONE_DATA_DIR": str(tmp_path / "data"),
        "PZONE_COOKIE_SECURE": "false",
    }

    with api_process(env) as base_url:
        context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB")
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        js_errors: list[str] = []
        page.on("pageerror", lambda error: js_errors.append(str(error)))

        # --- a new client signs up --------------------------------------------------------------------------------
        page.goto(f"{base_url}/")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.get_by_role("link", name="Create an account").click()
        page.get_by_label("Email").fill("rider@example.com")
        page.get_by_label("Password").fill("short")
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("alert")).to_contain_text("Password")  # the API's reason, shown as it said it
        shot(page, tmp_path, "signup-error")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page).to_have_url(f"{base_url}/#/upload")
        expect(page.locator("#account-email")).to_have_text("rider@example.com")
        expect(page.locator("#nav-dashboard")).to_be_hidden()  # clients see no dashboard link

        # --- uploads a photo: presigned PUT with progress, then complete ----------------------------------------
        file_input = page.locator("#photo")
        assert file_input.get_attribute("accept") == "image/*"
        assert file_input.get_attribute("capture") == "environment"
        expect(page.locator("#device option", has_text=ALARM_DEVICE)).to_have_count(1)
        page.get_by_label("Scooter (device)").select_option(ALARM_DEVICE)
        file_input.set_input_files(str(photo))
        expect(page.locator("img.preview")).to_be_visible()
        shot(page, tmp_path, "upload-form")
        with page.expect_request(lambda r: r.method == "PUT" and "/api/objects/uploads/" in r.url) as put:
            page.get_by_role("button", name="Upload photo").click()
        # the bytes went straight to the presigned URL, by XMLHttpRequest (the one with upload progress events)
        assert put.value.resource_type == "xhr"
        assert put.value.headers["content-type"] == "image/jpeg"
        result = page.locator("#upload-result")
        expect(result).to_be_visible()
        expect(result).to_contain_text("pending")  # no model tier configured
        expect(result).to_contain_text(ALARM_DEVICE)
        assert page.locator("#upload-progress").evaluate("el => el.value") == 100
        thumb = result.locator("img.result-thumb")
        expect(thumb).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
        shot(page, tmp_path, "upload")

        # --- ... then two more at once: one batch create, a direct PUT each, one batch complete ------------------
        page.locator("#upload-another").click()
        page.get_by_label("Scooter (device)").select_option(ALARM_DEVICE)
        second = jpeg(tmp_path / "second.jpg", seed=1)
        not_a_photo = tmp_path / "notes.jpg"
        not_a_photo.write_text("not a photo at all, only a name that says so")
        file_input.set_input_files([str(second), str(not_a_photo)])
        expect(page.get_by_role("button", name="Upload 2 photos")).to_be_visible()
        with (
            page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/photos/batch")),
            page.expect_response(lambda r: r.url.endswith("/api/photos/batch/complete")) as completed,
        ):
            page.get_by_role("button", name="Upload 2 photos").click()
        assert [item["status"] for item in completed.value.json()["items"]] == [200, 422]
        batch = page.locator("#batch-result")
        expect(batch).to_be_visible()
        expect(batch.get_by_role("heading")).to_have_text("1 of 2 photos uploaded")
        expect(batch.locator(".batch-item")).to_have_count(2)
        expect(batch.locator(".batch-item-error")).to_contain_text("notes.jpg")
        expect(batch.locator(".batch-item-error .form-error")).not_to_be_empty()  # the API's reason
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0",
            arg=batch.locator("img.batch-thumb").element_handle(),
        )
        shot(page, tmp_path, "upload-batch")

        # --- ... and finds them in the history --------------------------------------------------------------------
        page.get_by_role("link", name="History", exact=True).click()
        rows = page.locator(".history-table tbody tr")
        expect(rows).to_have_count(2)
        row = rows.first
        expect(row.locator(".cell-verdict")).to_have_text("pending")
        expect(row.locator(".cell-model")).to_have_text("—")
        expect(row.locator(".cell-measured")).to_have_text("—")
        expect(row).to_contain_text(ALARM_DEVICE)
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=row.locator("img.thumb").element_handle()
        )
        expect(page.locator(".pager-info")).to_contain_text("2 photos")
        shot(page, tmp_path, "history")

        # the same history on a phone-width screen
        page.set_viewport_size({"width": 390, "height": 844})
        expect(row).to_be_visible()
        shot(page, tmp_path, "history-phone")
        page.set_viewport_size({"width": 1280, "height": 860})

        # the client's session cannot read the dashboard
        page.goto(f"{base_url}/#/dashboard")
        expect(page.get_by_role("alert")).to_contain_text("operators only")

        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()

        # --- the operator logs in and watches the dashboard -------------------------------------------------------
        page.get_by_label("Email").fill("ops@example.com")
        page.get_by_label("Password").fill("wrong password!")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_have_text("Invalid email or password.")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(f"{base_url}/#/dashboard")
        expect(page.locator("#nav-dashboard")).to_be_visible()

        open_alarms = page.locator(".tile", has_text="Open alarms").locator(".tile-value")
        expect(open_alarms).to_have_text("1")
        expect(page.locator(".tile", has_text="Devices").locator(".tile-value")).to_have_text("2")
        devices = page.locator("#devices tbody tr")
        expect(devices).to_have_count(2)
        alarmed = page.locator(f'#devices tr[data-device-id="{ALARM_DEVICE}"]')
        expect(alarmed.locator(".pill")).to_have_text("fallen")
        expect(alarmed).to_contain_text("84.0°")
        expect(alarmed.locator(".alarm-flag")).to_contain_text("open ·")
        expect(page.locator("#alarms .alarm")).to_have_count(1)
        expect(page.locator("#alarms")).to_contain_text(ALARM_DEVICE)
        # the chart of the alarmed device is chosen first: a line through its readings
        expect(page.locator("#chart-title")).to_have_text(f"Tilt of {ALARM_DEVICE}")
        expect(page.locator("#tilt-chart svg path.chart-line")).to_have_count(1)
        expect(page.locator("#tilt-chart svg circle.chart-dot")).to_have_count(12)
        shot(page, tmp_path, "dashboard")

        # live refresh without a reload: the calm device tips over
        page.evaluate("window.__noReload = true")
        ingest(fleet, [reading(CALM_DEVICE, "zone-south", 5, 40, ago_s=1)])
        calm = page.locator(f'#devices tr[data-device-id="{CALM_DEVICE}"]')
        expect(calm.locator(".pill")).to_have_text("tilted", timeout=12_000)
        expect(page.locator(".tile", has_text="Tilted").locator(".tile-value")).to_have_text("1")
        assert page.evaluate("window.__noReload") is True
        # another device's chart on click
        calm.get_by_role("button", name=CALM_DEVICE).click()
        expect(page.locator("#chart-title")).to_have_text(f"Tilt of {CALM_DEVICE}")
        expect(page.locator("#tilt-chart svg circle.chart-dot")).to_have_count(5)

        page.set_viewport_size({"width": 390, "height": 844})
        # redrawn at the phone's width, so that its labels stay legible
        page.wait_for_function("() => document.querySelector('#tilt-chart svg').viewBox.baseVal.width < 500")
        expect(page.locator("#tilt-chart svg path.chart-line")).to_be_visible()
        shot(page, tmp_path, "dashboard-phone")

        assert not js_errors, js_errors
        context.close()
