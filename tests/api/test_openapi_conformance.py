"""The API against its own OpenAPI document (Schemathesis): generated requests to every operation, from a signed-in
operator, must never get a 5xx, and every answer must be one the document declares: its status code, its content
type and a body matching its schema.

Operations run against one API over HTTP (``signed_in_api``). How each is signed in:

- the operator's session, for every operation that leaves a session as it found it;
- a fresh session of a second user for each request to logout, logout-everywhere and password change (they end or
  replace the session they are sent with);
- no session for signup and login: they replace the session of the client that sends them, and need none.

Every other request that names a photo, a device or an object names an existing one (the seeded photo, ``dev-1``,
the photo's signed thumbnail), and every other new photo is a JPEG of ``dev-1``, so that the answers of success are
checked too, not only the refusals.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from pzone_api.main import create_app
from pzone_api.settings import Settings
from tests.support.api import SignedInApi
from tests.support.photos import photo_bytes

pytestmark = pytest.mark.integration

# The document is the app's own; building it touches neither the database nor the data folder.
schema = schemathesis.openapi.from_dict(
    create_app(
        Settings(database_url="postgresql+psycopg://unused@127.0.0.1/unused", data_dir=Path("unused"))
    ).openapi()
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SESSION_ENDING = {"POST /api/auth/logout", "POST /api/auth/logout-everywhere", "POST /api/auth/password"}
NO_SESSION = {"POST /api/auth/signup", "POST /api/auth/login"}

# Generated requests sent, by operation (checked and reported by the last test of the module).
REQUESTS: Counter[str] = Counter()
MIN_REQUESTS = 500
SMALL_JPEG = photo_bytes((64, 48))


def aim(case: Case, api: SignedInApi) -> None:
    """Every other request naming a photo, a device or an object names an existing one, and every other new photo
    is of the seeded device and a JPEG, so that the answers of success are checked too."""
    if REQUESTS[case.operation.label] % 2:
        return
    params = case.path_parameters or {}
    if "photo_id" in params:
        params["photo_id"] = api.photo_id
    if "device_id" in params:
        params["device_id"] = "dev-1"
    if "key" in params and case.method == "GET":
        thumb = urlsplit(api.thumb_url)
        params["key"] = thumb.path.removeprefix("/api/objects/")
        case.query = {**(case.query or {}), **dict(parse_qsl(thumb.query))}
    body = case.body
    if case.operation.label == "POST /api/photos" and isinstance(body, dict):
        body.update(device_id="dev-1", zone_id=None, content_type="image/jpeg")
    elif case.operation.label == "POST /api/photos/batch" and isinstance(body, dict):
        for item in body.get("photos") or []:
            if isinstance(item, dict):
                item.update(device_id="dev-1", zone_id=None, content_type="image/jpeg")
    elif case.operation.label == "POST /api/photos/upload" and isinstance(body, dict):
        body.pop("zone_id", None)  # a form has no null
        body.update(device_id="dev-1", file=SMALL_JPEG)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_operation_conforms(case: Case, signed_in_api: SignedInApi) -> None:
    label = case.operation.label
    aim(case, signed_in_api)
    if label in SESSION_ENDING:
        session = signed_in_api.fresh_client_session()
    elif label in NO_SESSION:
        session = None
    else:
        session = signed_in_api.operator
    try:
        response = case.call(base_url=signed_in_api.base_url, session=session, timeout=30)
    finally:
        if session is not None and session is not signed_in_api.operator:
            session.close()
    REQUESTS[label] += 1
    case.validate_response(response, checks=CHECKS)
    # A conforming 401 would do here too, yet it means that the run lost its session and reached no handler.
    assert session is not signed_in_api.operator or response.status_code != 401, (
        "the operator's session ended"
    )


def test_every_operation_was_exercised(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs last: every operation of the document got generated requests, and enough of them in all."""
    operations = {result.ok().label for result in schema.get_all_operations()}
    collected = {
        item.name.removeprefix("test_operation_conforms[").removesuffix("]")
        for item in request.session.items
        if item.module is request.module and item.name.startswith("test_operation_conforms[")
    }
    if collected != operations:
        pytest.skip("only some operations were selected")
    total = sum(REQUESTS.values())
    summary = f"{total} generated API requests over {len(REQUESTS)} of {len(operations)} operations"
    with capsys.disabled():  # on the terminal with or without -s
        print(f"\nOpenAPI conformance: {summary}")
    assert set(REQUESTS) == operations, summary
    assert total >= MIN_REQUESTS, summary
