"""Virtual clients: photograph a device at its true tilt and upload the photo through the API, as a phone would.

The flow is the photo intake's: ``POST /api/photos`` → presigned ``PUT`` → ``POST /api/photos/{id}/complete``, with
the session cookie and the double-submit CSRF header. No label is sent: labels come from the sensor readings.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np

from pzone_api.api.deps import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from pzone_stack.photosim.render import lean_of, render_photo


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A monitored object as it truly is at ``at``: what the sensor measures, what the camera sees."""

    device_id: str
    zone_id: str
    tilt_deg: float
    azimuth_deg: float
    at: datetime


def photograph(
    state: DeviceState, rng: np.random.Generator, *, size: tuple[int, int] = (640, 480), exif: bool = True
) -> bytes:
    """A JPEG of the object in ``state`` (EXIF DateTimeOriginal = ``state.at`` unless ``exif`` is false)."""
    return render_photo(
        state.tilt_deg, rng, size=size, lean=lean_of(state.azimuth_deg), taken_at=state.at if exif else None
    )


class ApiError(RuntimeError):
    """The API refused a request: ``status`` and the answer's text."""

    def __init__(self, what: str, response: httpx.Response) -> None:
        super().__init__(f"{what}: HTTP {response.status_code} {response.text[:300]}")
        self.status = response.status_code
        self.text = response.text


@dataclass(frozen=True, slots=True)
class Uploaded:
    photo_id: str
    status: str
    taken_at: str | None


class ApiClient:
    """A signed-in client of the P-ZONE API (httpx). Use as a context manager.

    The session cookies are kept by hand and sent on every request to the API, also over plain HTTP: the API marks
    them Secure, which a browser honours on localhost but Python's cookie jar does not.
    """

    def __init__(
        self, base_url: str, *, timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None
    ):
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)
        self.csrf: str | None = None
        self.email: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _signed_in(self, response: httpx.Response, what: str, email: str) -> None:
        if response.status_code not in (200, 201):
            raise ApiError(what, response)
        token = response.cookies.get(SESSION_COOKIE)
        if not token:
            raise ApiError(f"{what}: no session cookie in the answer", response)
        self.csrf = str(response.json()["csrf_token"])
        self.email = email
        self.http.cookies.clear()
        self.http.headers["Cookie"] = f"{SESSION_COOKIE}={token}; {CSRF_COOKIE}={self.csrf}"
        self.http.headers[CSRF_HEADER] = self.csrf

    def signup(self, email: str, password: str) -> None:
        response = self.http.post("/api/auth/signup", json={"email": email, "password": password})
        self._signed_in(response, "sign-up", email)

    def login(self, email: str, password: str) -> None:
        response = self.http.post("/api/auth/login", json={"email": email, "password": password})
        self._signed_in(response, "log-in", email)

    def signup_random(self) -> tuple[str, str]:
        """Sign up a new simulated client; returns its (email, password)."""
        email = f"sim-{secrets.token_hex(6)}@example.com"
        password = secrets.token_urlsafe(18)
        self.signup(email, password)
        return email, password

    def devices(self) -> list[dict[str, Any]]:
        response = self.http.get("/api/devices")
        if response.status_code != 200:
            raise ApiError("device list", response)
        return list(response.json())

    def upload(
        self,
        data: bytes,
        *,
        device_id: str,
        taken_at: datetime | None,
        content_type: str = "image/jpeg",
        processing_timeout_s: float = 120.0,
    ) -> Uploaded:
        """Create the photo, PUT the bytes to the presigned URL, complete it; returns the stored photo."""
        body: dict[str, Any] = {"device_id": device_id, "content_type": content_type, "size": len(data)}
        if taken_at is not None:
            body["taken_at"] = taken_at.astimezone(UTC).isoformat()
        created = self.http.post("/api/photos", json=body)
        if created.status_code != 201:
            raise ApiError("create photo", created)
        answer = created.json()
        photo_id, upload = answer["photo"]["id"], answer["upload"]
        url, headers = str(upload["url"]), dict(upload["headers"])
        if url.startswith("/"):  # the local object store: served by the API itself
            put = self.http.put(url, content=data, headers=headers)
        else:  # S3: nothing of our session goes there
            put = httpx.put(url, content=data, headers=headers, timeout=self.http.timeout)
        if put.status_code not in (200, 201, 204):
            raise ApiError("upload", put)
        deadline = time.monotonic() + processing_timeout_s
        while True:
            # 202: the photo worker has not finished yet; completing again waits for the same job
            done = self.http.post(f"/api/photos/{photo_id}/complete")
            if done.status_code != 202 or time.monotonic() > deadline:
                break
        if done.status_code not in (200, 201):
            raise ApiError("complete photo", done)
        photo = done.json()
        return Uploaded(str(photo["id"]), str(photo["status"]), photo.get("taken_at"))
