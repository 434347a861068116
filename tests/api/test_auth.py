"""Accounts and sessions: sign-up, login, logout, CSRF, roles, failed-login limits, expiry and restarts.

The SQL session store runs on SQLite and PostgreSQL; the Redis store on the shared Redis under a random key prefix
per test (removed afterwards, never FLUSHALL).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from argon2 import PasswordHasher
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.orm import Session

from pzone.db.models import User, WebSession
from pzone_api.api.deps import CsrfChecked, CurrentUser, OperatorUser
from pzone_api.ratelimit import InProcessAttemptLimiter
from pzone_api.security import (
    EmailTaken,
    InvalidEmail,
    PasswordHashing,
    WeakPassword,
    create_user,
    origin_matches_host,
)
from pzone_api.sessions import RedisSessionStore, SqlSessionStore, token_hash
from tests.support.api import (
    FAST_HASHING,
    TEST_REDIS_URL,
    api_process,
    create_user_in_db,
    delete_redis_keys,
    login,
    make_app,
    random_redis_prefix,
    signup,
)
from tests.support.photos import add_device

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
SESSION = "pzone_session"
CSRF = "pzone_csrf"


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted afterwards."""
    prefix = random_redis_prefix()
    try:
        yield prefix
    finally:
        delete_redis_keys(TEST_REDIS_URL, prefix)


@pytest.fixture(params=["sql", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Where sessions and failed-login counts live: SQL table + in-process window, or Redis."""
    return str(request.param)


def build_app(database_url: str, tmp_path: Path, backend: str, prefix: str, **settings: Any) -> FastAPI:
    redis_url = TEST_REDIS_URL if backend == "redis" else None
    app = make_app(database_url, tmp_path / "data", redis_url, redis_key_prefix=prefix, **settings)
    app.include_router(only_for_tests)
    return app


only_for_tests = APIRouter(prefix="/api/test-only")


@only_for_tests.post("/protected", dependencies=[CsrfChecked])
def protected_post(user: CurrentUser) -> dict[str, str]:
    """A mutating route of a logged-in user."""
    return {"user": user.id}


@only_for_tests.get("/operator")
def operator_only(user: OperatorUser) -> dict[str, str]:
    """An operator-only page."""
    return {"operator": user.email}


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers of a response by cookie name."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


def me_with(client: TestClient, token: str) -> httpx.Response:
    """GET /me with exactly this session cookie (and no other cookie of the client's jar)."""
    client.cookies.clear()
    client.cookies.set(SESSION, token)
    return client.get("/api/auth/me")


# ---------------------------------------------------------------------------------------------------------------
# the happy path, on both dialects and both session stores


def test_signup_me_logout_login(db_url: str, backend: str, redis_prefix: str, tmp_path: Path) -> None:
    app = build_app(db_url, tmp_path, backend, redis_prefix)
    with TestClient(app) as client:
        response = client.post("/api/auth/signup", json={"email": "  Ana@Example.COM ", "password": PASSWORD})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["user"]["email"] == "ana@example.com" and body["user"]["role"] == "client"
        assert set(body) == {"user", "csrf_token"} and set(body["user"]) == {"id", "email", "role"}
        csrf, token = body["csrf_token"], client.cookies[SESSION]
        assert client.cookies[CSRF] == csrf and len(token) >= 43

        me = client.get("/api/auth/me")
        assert me.status_code == 200
        assert me.json() == {**body["user"], "csrf_token": csrf}

        out = client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 204 and out.content == b""
        cleared = set_cookies(out)
        assert "Max-Age=0" in cleared[SESSION] and "Max-Age=0" in cleared[CSRF]
        assert SESSION not in client.cookies
        assert client.get("/api/auth/me").status_code == 401
        assert me_with(client, token).status_code == 401  # replaying the old cookie: the session is gone

        client.cookies.clear()
        csrf2 = login(client, "ANA@example.com", PASSWORD)
        assert csrf2 != csrf and client.cookies[SESSION] != token
        assert client.get("/api/auth/me").json()["email"] == "ana@example.com"

    if backend == "redis":  # only hashes of tokens are stored
        keys = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True).keys(f"{redis_prefix}session:*")
        assert keys == [f"{redis_prefix}session:{token_hash(client.cookies[SESSION])}"]
    else:
        engine = create_engine(db_url)
        with Session(engine) as session:
            assert session.scalars(select(WebSession.token_hash)).all() == [
                token_hash(client.cookies[SESSION])
            ]
        engine.dispose()


def test_a_new_login_ends_the_previous_session_of_the_client(sqlite_url: str, tmp_path: Path) -> None:
    with TestClient(build_app(sqlite_url, tmp_path, "sql", "")) as client:
        signup(client, "ana@example.com", PASSWORD)
        first = client.cookies[SESSION]
        login(client, "ana@example.com", PASSWORD)
        assert client.cookies[SESSION] != first
        assert me_with(client, first).status_code == 401


# ---------------------------------------------------------------------------------------------------------------
# credentials and validation


def test_wrong_password_and_unknown_email_get_the_same_answer(sqlite_url: str, tmp_path: Path) -> None:
    with TestClient(build_app(sqlite_url, tmp_path, "sql", "")) as client:
        signup(client, "ana@example.com", PASSWORD)
        client.cookies.clear()
        wrong = client.post(
            "/api/auth/login", json={"email": "ana@example.com", "password": "not the password"}
        )
        unknown = client.post("/api/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
        malformed = client.post("/api/auth/login", json={"email": "no-at-sign", "password": PASSWORD})
        for response in (wrong, unknown, malformed):
            assert response.status_code == 401
            assert response.json() == {"detail": "Invalid email or password."}
            assert SESSION not in client.cookies


def test_duplicate_email_is_409_whatever_its_case(db_url: str, tmp_path: Path) -> None:
    with TestClient(build_app(db_url, tmp_path, "sql", "")) as client:
        signup(client, "ana@example.com", PASSWORD)
        client.cookies.clear()
        again = client.post(
            "/api/auth/signup", json={"email": "ANA@example.com ", "password": "another password"}
        )
        assert again.status_code == 409
        assert "already exists" in again.json()["detail"]
        assert SESSION not in client.cookies


@pytest.mark.parametrize(
    ("email", "password", "field", "reason"),
    [
        ("ana@example.com", "short", "password", "at least 10 characters"),
        ("ana@example.com", "x" * 257, "password", "at most 256 characters"),
        ("ana@example.com", " " * 12, "password", "only whitespace"),
        ("ana.example.com", PASSWORD, "email", "exactly one @"),
        ("ana@b@example.com", PASSWORD, "email", "exactly one @"),
        ("ana@localhost", PASSWORD, "email", "dotted name"),
        ("@example.com", PASSWORD, "email", "nothing before the @"),
        ("ana smith@example.com", PASSWORD, "email", "whitespace"),
        ("a" * 310 + "@example.com", PASSWORD, "email", "longer than 320"),
        ("   ", PASSWORD, "email", "empty"),
    ],
)
def test_bad_email_or_password_is_422_with_the_reason(
    sqlite_url: str, tmp_path: Path, email: str, password: str, field: str, reason: str
) -> None:
    with TestClient(build_app(sqlite_url, tmp_path, "sql", "")) as client:
        response = client.post("/api/auth/signup", json={"email": email, "password": password})
        assert response.status_code == 422
        errors = response.json()["detail"]
        assert [e["loc"] for e in errors] == [["body", field]]
        assert reason in errors[0]["msg"]
        assert password not in response.text  # a rejected password is never echoed back


def test_both_reasons_at_once_and_malformed_bodies(sqlite_url: str, tmp_path: Path) -> None:
    with TestClient(build_app(sqlite_url, tmp_path, "sql", "")) as client:
        both = client.post("/api/auth/signup", json={"email": "nope", "password": "short"})
        assert both.status_code == 422
        assert {e["loc"][-1] for e in both.json()["detail"]} == {"email", "password"}
        assert client.post("/api/auth/signup", json={"email": "ana@example.com"}).status_code == 422
        assert (
            client.post("/api/auth/login", json={"email": "a@example.com", "password": ""}).status_code == 422
        )
        huge = client.post("/api/auth/login", json={"email": "a@example.com", "password": "p" * 300})
        assert huge.status_code == 422 and "p" * 300 not in huge.text


def test_create_user_for_the_cli(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        user = create_user(session, " Op@Example.com", PASSWORD, "operator", hashing=FAST_HASHING)
        session.commit()
        assert (user.email, user.role, user.is_active) == ("op@example.com", "operator", True)
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
        with pytest.raises(EmailTaken):
            create_user(session, "op@example.com", PASSWORD, "client", hashing=FAST_HASHING)
        with pytest.raises(ValueError, match="role"):
            create_user(session, "x@example.com", PASSWORD, "admin", hashing=FAST_HASHING)
        with pytest.raises(WeakPassword):
            create_user(session, "x@example.com", "short", hashing=FAST_HASHING)
        with pytest.raises(InvalidEmail):
            create_user(session, "x", PASSWORD, hashing=FAST_HASHING)
    engine.dispose()


def test_login_rehashes_a_password_hashed_with_other_parameters(sqlite_url: str, tmp_path: Path) -> None:
    old = PasswordHashing(PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1))
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        user = create_user(session, "ana@example.com", PASSWORD, hashing=old)
        session.commit()
        before = user.password_hash
    assert "m=1024,t=2,p=1" in before
    with TestClient(build_app(sqlite_url, tmp_path, "sql", "")) as client:
        login(client, "ana@example.com", PASSWORD)
    with Session(engine) as session:
        after = session.scalars(select(User.password_hash)).one()
    engine.dispose()
    assert after != before and "m=8192,t=1,p=1" in after
    assert FAST_HASHING.verify(after, PASSWORD)


def test_inactive_user_cannot_log_in_and_loses_its_session(sqlite_url: str, tmp_path: Path) -> None:
    with TestClient(build_app(sqlite_url, tmp_path, "sql", "")) as client:
        signup(client, "ana@example.com", PASSWORD)
        engine = create_engine(sqlite_url)
        with Session(engine) as session, session.begin():
            session.execute(update(User).values(is_active=False))
        engine.dispose()
        assert client.get("/api/auth/me").status_code == 401
        client.cookies.clear()
        refused = client.post("/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD})
        assert refused.status_code == 401 and refused.json() == {"detail": "Invalid email or password."}


# ---------------------------------------------------------------------------------------------------------------
# cookies, CSRF, origins, roles


@pytest.mark.parametrize("secure", [True, False])
def test_cookie_flags(sqlite_url: str, tmp_path: Path, secure: bool) -> None:
    app = build_app(sqlite_url, tmp_path, "sql", "", cookie_secure=secure, session_ttl_s=3600)
    with TestClient(app) as client:
        response = client.post("/api/auth/signup", json={"email": "ana@example.com", "password": PASSWORD})
        cookies = set_cookies(response)
        session, csrf = cookies[SESSION].lower(), cookies[CSRF].lower()
        for header in (session, csrf):
            assert "samesite=lax" in header and "path=/" in header and "max-age=3600" in header
            assert ("; secure" in header) is secure
            assert "domain=" not in header
        assert "httponly" in session
        assert "httponly" not in csrf  # the front end reads it to echo it in X-CSRF-Token


def test_csrf_is_required_on_unsafe_methods(sqlite_url: str, tmp_path: Path) -> None:
    with TestClient(build_app(sqlite_url, tmp_path, "sql", "")) as client:
        assert client.post("/api/test-only/protected").status_code == 401  # no session: 401 comes first
        csrf = signup(client, "ana@example.com", PASSWORD)
        missing = client.post("/api/test-only/protected")
        assert missing.status_code == 403 and "CSRF token missing" in missing.json()["detail"]
        wrong = client.post("/api/test-only/protected", headers={"X-CSRF-Token": csrf[:-1] + "x"})
        assert wrong.status_code == 403 and "CSRF token invalid" in wrong.json()["detail"]
        ok = client.post("/api/test-only/protected", headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200

        # another session's token is no good either
        other_csrf = signup(TestClient(client.app), "bob@example.com", PASSWORD)  # no lifespan of its own
        assert (
            client.post("/api/test-only/protected", headers={"X-CSRF-Token": other_csrf}).status_code == 403
        )

        assert client.post("/api/auth/logout").status_code == 403
        assert client.post("/api/auth/logout", headers={"X-CSRF-Token": "nope"}).status_code == 403
        assert client.get("/api/auth/me").status_code == 200  # still logged in
        assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204


def test_cross_site_login_and_signup_are_refused(sqlite_url: str, tmp_path: Path) -> None:
    with TestClient(build_app(sqlite_url, tmp_path, "sql", "")) as client:
        body = {"email": "ana@example.com", "password": PASSWORD}
        for origin in ("https://evil.example", "null", "http://testserver.evil.example"):
            response = client.post("/api/auth/signup", json=body, headers={"Origin": origin})
            assert response.status_code == 403 and "Cross-site" in response.json()["detail"]
        assert (
            client.post("/api/auth/signup", json=body, headers={"Origin": "http://testserver"}).status_code
            == 201
        )
        client.cookies.clear()
        assert (
            client.post("/api/auth/login", json=body, headers={"Origin": "https://evil.example"}).status_code
            == 403
        )
        assert (
            client.post("/api/auth/login", json=body, headers={"Origin": "http://testserver"}).status_code
            == 200
        )


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("https://pzone.example", "pzone.example", True),
        ("https://pzone.example", "pzone.example:443", True),
        ("http://localhost:5173", "localhost:5173", True),
        ("HTTPS://PZone.Example", "pzone.example", True),
        ("http://localhost:5173", "localhost:8000", False),
        ("https://evil.example", "pzone.example", False),
        ("https://pzone.example.evil", "pzone.example", False),
        ("null", "pzone.example", False),
        ("file://", "pzone.example", False),
        ("https://pzone.example/path", "pzone.example", False),
    ],
)
def test_origin_matches_host(origin: str, host: str, same: bool) -> None:
    assert origin_matches_host(origin, host) is same


def test_operator_routes(sqlite_url: str, tmp_path: Path) -> None:
    create_user_in_db(sqlite_url, "op@example.com", PASSWORD, "operator")
    with TestClient(build_app(sqlite_url, tmp_path, "sql", "")) as client:
        assert client.get("/api/test-only/operator").status_code == 401
        signup(client, "ana@example.com", PASSWORD)
        refused = client.get("/api/test-only/operator")
        assert refused.status_code == 403 and refused.json() == {"detail": "Operator role required."}
        client.cookies.clear()
        login(client, "op@example.com", PASSWORD)
        assert client.get("/api/auth/me").json()["role"] == "operator"
        assert client.get("/api/test-only/operator").json() == {"operator": "op@example.com"}


def test_signing_out_everywhere_and_changing_the_password_end_the_other_sessions(
    pg_url: str, backend: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Ana signed in on her phone and her laptop (two sessions), Bob on his: one client that carries each session's
    cookies in turn (the app's backends stay those of its one lifespan)."""
    app = build_app(pg_url, tmp_path, backend, redis_prefix)
    new = "a brand new passphrase"
    with TestClient(app) as client:

        def session_of(email: str, password: str, path: str = "/api/auth/login") -> tuple[str, str]:
            client.cookies.clear()
            answer = client.post(path, json={"email": email, "password": password})
            assert answer.status_code in (200, 201), answer.text
            return client.cookies[SESSION], str(answer.json()["csrf_token"])

        def post_as(
            session: tuple[str, str], path: str, body: Any = None, *, csrf: bool = True
        ) -> httpx.Response:
            client.cookies.clear()
            client.cookies.set(SESSION, session[0])
            client.cookies.set(CSRF, session[1])
            return client.post(path, json=body, headers={"X-CSRF-Token": session[1]} if csrf else {})

        def signed_in(session: tuple[str, str]) -> bool:
            return me_with(client, session[0]).status_code == 200

        phone = session_of("ana@example.com", PASSWORD, "/api/auth/signup")
        laptop = session_of("ana@example.com", PASSWORD)
        bob = session_of("bob@example.com", PASSWORD, "/api/auth/signup")

        # The password: the current one is asked for (a wrong one counts as a failed log-in), the new one checked.
        wrong = post_as(laptop, "/api/auth/password", {"current_password": "not it", "new_password": new})
        assert wrong.status_code == 401 and signed_in(phone) and signed_in(laptop)
        weak = post_as(laptop, "/api/auth/password", {"current_password": PASSWORD, "new_password": "short"})
        assert weak.status_code == 422 and "at least" in weak.text
        body = {"current_password": PASSWORD, "new_password": new}
        assert post_as(laptop, "/api/auth/password", body, csrf=False).status_code == 403
        changed = post_as(laptop, "/api/auth/password", body)
        assert changed.status_code == 200, changed.text
        laptop = (
            changed.cookies[SESSION],
            str(changed.json()["csrf_token"]),
        )  # a new session for this client
        assert not signed_in(phone)  # whoever knew the old password is signed out
        assert signed_in(laptop) and signed_in(bob)  # this client goes on; nobody else's session ends
        client.cookies.clear()
        old = client.post("/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD})
        assert old.status_code == 401
        phone = session_of("ana@example.com", new)

        # Signing out everywhere: every session of the user ends, this one too.
        assert post_as(laptop, "/api/auth/logout-everywhere", csrf=False).status_code == 403
        done = post_as(laptop, "/api/auth/logout-everywhere")
        assert done.status_code == 204 and SESSION in done.headers.get("set-cookie", "")
        assert not signed_in(laptop) and not signed_in(phone) and signed_in(bob)


# ---------------------------------------------------------------------------------------------------------------
# failed-login limits


def test_failed_logins_are_limited_per_pair_email_and_address(
    pg_url: str, backend: str, redis_prefix: str, tmp_path: Path
) -> None:
    window = 60
    app = build_app(
        pg_url,
        tmp_path,
        backend,
        redis_prefix,
        login_max_attempts=3,
        login_max_per_email=5,
        login_max_per_address=6,
        login_window_s=window,
    )

    clients: dict[str, TestClient] = {}

    def attempt(ip: str, email: str, password: str) -> httpx.Response:
        # One browser per address, keeping its cookies. Clients without a lifespan of their own: the app's engine
        # and backends stay those of the outer client.
        from_ip = clients.setdefault(ip, TestClient(app, client=(ip, 40000)))
        return from_ip.post("/api/auth/login", json={"email": email, "password": password})

    def assert_limited(response: httpx.Response) -> None:
        assert response.status_code == 429, response.text
        assert 1 <= int(response.headers["Retry-After"]) <= window
        assert "Too many failed logins" in response.json()["detail"]

    with TestClient(app) as client:
        for name in ("ana", "bob", "carl"):
            signup(client, f"{name}@example.com", PASSWORD)

        # One account from one address: three failures lock that pair, even for the right password; the owner
        # elsewhere is not locked out by someone guessing here.
        for _ in range(3):
            assert attempt("10.0.0.1", "Ana@example.com", "wrong password").status_code == 401
        assert_limited(attempt("10.0.0.1", "ana@example.com", PASSWORD))
        assert attempt("10.0.0.2", "ana@example.com", PASSWORD).status_code == 200

        # One account from everywhere: guessing spread over addresses stops at five, for every new browser; a
        # browser that signed in to bob before keeps signing in, and its success unlocks nothing for the others.
        assert attempt("10.0.1.99", "bob@example.com", PASSWORD).status_code == 200
        for n in range(5):
            assert attempt(f"10.0.1.{n}", "bob@example.com", "wrong password").status_code == 401
        assert_limited(attempt("10.0.1.50", "bob@example.com", PASSWORD))
        assert attempt("10.0.1.99", "bob@example.com", PASSWORD).status_code == 200
        assert_limited(attempt("10.0.1.51", "bob@example.com", PASSWORD))
        forged = TestClient(app, client=("10.0.1.52", 40000), cookies={"pzone_browser": "0" * 64})
        assert_limited(
            forged.post("/api/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
        )

        # One address over every account (a NAT): five people's typos do not lock out the sixth; guessing at many
        # accounts from it stops at six failures.
        for n in range(5):
            assert attempt("10.0.2.1", f"nobody{n}@example.com", "wrong password").status_code == 401
        assert attempt("10.0.2.1", "carl@example.com", PASSWORD).status_code == 200
        assert attempt("10.0.2.1", "nobody9@example.com", "wrong password").status_code == 401
        assert_limited(attempt("10.0.2.1", "carl@example.com", PASSWORD))
        assert attempt("10.0.2.2", "carl@example.com", PASSWORD).status_code == 200

    if backend == "redis":
        client_keys = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True).keys(
            f"{redis_prefix}login:*"
        )
        assert client_keys and all(
            0 < redis.Redis.from_url(TEST_REDIS_URL).ttl(k) <= window for k in client_keys
        )
        assert not any("@" in key for key in client_keys)  # addresses are hashed in key names


def test_in_process_window_slides() -> None:
    now = [1000.0]
    limiter = InProcessAttemptLimiter(window_s=60, clock=lambda: now[0])
    for step in range(3):
        assert limiter.reserve({"k": 3}) == 0
        now[0] += 10 * (step < 2)  # attempts at t=1000, 1010, 1020
    assert limiter.reserve({"k": 3, "other": 3}) == 40  # the oldest (1000) leaves the window at 1060
    assert limiter.reserve({"other": 3}) == 0  # ... and a refused attempt counted against no key
    now[0] = 1059.5
    assert limiter.reserve({"k": 3}) == 1
    now[0] = 1060.0
    assert limiter.reserve({"k": 3}) == 0  # one slot free again, and used: now the one of 1010 is the oldest
    assert limiter.reserve({"k": 3}) == 10
    limiter.release(["k"])  # a success gives its attempt back
    assert limiter.reserve({"k": 3}) == 0
    limiter.reset("k")
    assert [limiter.reserve({"k": 3}) for _ in range(4)] == [0, 0, 0, 60]
    # Each key with its own limit: "wide" still has room when "k" has none.
    now[0] = 2000.0
    assert [limiter.reserve({"k": 1, "wide": 5}) for _ in range(2)] == [0, 60]
    assert [limiter.reserve({"wide": 5}) for _ in range(5)] == [0, 0, 0, 0, 60]
    limiter.release(["unknown"])  # nothing to give back: nothing happens


def test_parallel_wrong_passwords_get_no_more_tries_than_the_limit(
    pg_url: str, backend: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Each attempt is counted before its password is hashed: 12 at once from one address, limit 3, get three 401s
    and nine 429s, however the hashes overlap."""
    import concurrent.futures

    app = build_app(pg_url, tmp_path, backend, redis_prefix, login_max_attempts=3, login_window_s=60)
    with TestClient(app) as client:
        signup(client, "ana@example.com", PASSWORD)
        client.cookies.clear()

        def attempt(n: int) -> int:
            body = {"email": "ana@example.com", "password": f"wrong password {n}"}
            return client.post("/api/auth/login", json=body).status_code

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            codes = sorted(pool.map(attempt, range(12)))
        assert codes == [401] * 3 + [429] * 9, codes
        assert (
            client.post(
                "/api/auth/login", json={"email": "ana@example.com", "password": PASSWORD}
            ).status_code
            == 429
        )


def test_signups_are_limited_per_client_address(
    pg_url: str, backend: str, redis_prefix: str, tmp_path: Path
) -> None:
    app = build_app(pg_url, tmp_path, backend, redis_prefix, signup_max_per_address=3, signup_window_s=60)
    body = {"password": PASSWORD}
    with TestClient(app) as client:
        codes = [
            client.post("/api/auth/signup", json={**body, "email": f"u{n}@example.com"}).status_code
            for n in range(5)
        ]
        assert codes == [201, 201, 201, 429, 429], codes
        refused = client.post("/api/auth/signup", json={**body, "email": "late@example.com"})
        assert (
            1 <= int(refused.headers["Retry-After"]) <= 60 and "Too many sign-ups" in refused.json()["detail"]
        )
        other = TestClient(app, client=("10.0.0.9", 40000))  # another address is not limited by this one
        assert other.post("/api/auth/signup", json={**body, "email": "late@example.com"}).status_code == 201
        # a refused sign-up made no account; bad input is not counted (nothing was hashed)
        assert client.post("/api/auth/login", json={"email": "u4@example.com", **body}).status_code == 401
    with Session(create_engine(pg_url)) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 4


def test_password_hashes_at_once_are_bounded_by_the_memory_budget() -> None:
    """40 threads (the API's threadpool) hashing and verifying at once: never more hashes in memory together
    than the budget holds (argon2-cffi's default 64 MiB each, 256 MiB by default: 4)."""
    import concurrent.futures
    import threading

    class Counting(PasswordHasher):
        def __init__(self) -> None:
            super().__init__(time_cost=1, memory_cost=16 * 1024, parallelism=1)  # 16 MiB a hash
            self.now = self.most = 0
            self.lock = threading.Lock()

        def _counted(self, work: Any) -> Any:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(0.01)  # the hashes overlap for sure
                return work()
            finally:
                with self.lock:
                    self.now -= 1

        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            return str(self._counted(lambda: super(Counting, self).hash(password, salt=salt)))

        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            return bool(self._counted(lambda: super(Counting, self).verify(hash, password)))

    hasher = Counting()
    hashing = PasswordHashing(hasher, memory_budget_mib=48)
    assert hashing.slots == 3
    stored = hashing.hash(PASSWORD)
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        results = list(pool.map(lambda n: hashing.verify(stored if n % 2 else None, PASSWORD), range(80)))
    assert results == [n % 2 == 1 for n in range(80)]
    assert hasher.most == 3
    assert PasswordHashing().slots == 4  # argon2-cffi's 64 MiB in the default 256 MiB
    assert PasswordHashing(memory_budget_mib=1).slots == 1  # never none


# ---------------------------------------------------------------------------------------------------------------
# expiry and restarts


@pytest.mark.parametrize(
    ("dialect", "backend"), [("sqlite", "sql"), ("postgresql", "sql"), ("postgresql", "redis")]
)
def test_sessions_expire(
    request: pytest.FixtureRequest, dialect: str, backend: str, redis_prefix: str, tmp_path: Path
) -> None:
    db_url = str(request.getfixturevalue(f"{'pg' if dialect == 'postgresql' else 'sqlite'}_url"))
    app = build_app(db_url, tmp_path, backend, redis_prefix, session_ttl_s=1)
    with TestClient(app) as client:
        signup(client, "ana@example.com", PASSWORD)
        token = client.cookies[SESSION]
        assert me_with(client, token).status_code == 200
        time.sleep(1.1)
        expired = me_with(client, token)  # the cookie is sent anyway: the server must refuse it
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    store = app.state.auth_backends.sessions
    if backend == "redis":
        assert isinstance(store, RedisSessionStore)
        assert not redis.Redis.from_url(TEST_REDIS_URL).exists(store.key(token))
    else:
        assert isinstance(store, SqlSessionStore)
        engine = create_engine(db_url)
        with Session(engine) as session:  # looked up once expired: purged
            assert session.get(WebSession, token_hash(token)) is None
        engine.dispose()


def test_sql_store_purges_expired_rows_on_new_sessions(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    user_id = create_user_in_db(sqlite_url, "ana@example.com", PASSWORD)
    short, long = SqlSessionStore(engine, ttl_s=1), SqlSessionStore(engine, ttl_s=3600)
    old_token, _ = short.create(user_id)
    time.sleep(1.1)
    new_token, data = long.create(user_id)
    with Session(engine) as session:
        assert session.scalars(select(WebSession.token_hash)).all() == [token_hash(new_token)]
    assert long.get(new_token) == data and long.get(old_token) is None
    long.delete(new_token)
    assert long.get(new_token) is None
    engine.dispose()


def test_the_event_loop_lookup_answers_as_the_blocking_one(sqlite_url: str, redis_prefix: str) -> None:
    """``aget`` (every signed-in request's lookup, on the event loop) and ``get`` agree on every kind of token."""
    import redis.asyncio

    user_id = create_user_in_db(sqlite_url, "ana@example.com", PASSWORD)
    client = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    engine = create_engine(sqlite_url)

    async def lookups() -> list[tuple[Any, Any, Any]]:
        async_client = redis.asyncio.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
        on_loop = RedisSessionStore(client, 3600, redis_prefix, async_client)
        in_thread = RedisSessionStore(client, 3600, redis_prefix)  # no asyncio client: aget takes a thread
        sql = SqlSessionStore(engine, 3600)
        token, _ = on_loop.create(user_id)
        sql_token, _ = sql.create(user_id)
        damaged, expired = "d" * 43, "e" * 43
        client.set(on_loop.key(damaged), "{not json", ex=60)
        gone = {"user_id": user_id, "csrf_token": "c", "expires_at": "2001-01-01T00:00:00+00:00"}
        client.set(on_loop.key(expired), json.dumps(gone), ex=60)
        answers = []
        for candidate in (token, sql_token, damaged, expired, "unknown", "x" * 500, ""):
            answers.append(
                (on_loop.get(candidate), await on_loop.aget(candidate), await in_thread.aget(candidate))
            )
            answers.append((sql.get(candidate), await sql.aget(candidate), sql.get(candidate)))
        await async_client.aclose()
        return answers

    try:
        answers = asyncio.run(lookups())
    finally:
        client.close()
        engine.dispose()
    assert all(blocking == on_loop == other for blocking, on_loop, other in answers), answers
    found = [blocking for blocking, _, _ in answers if blocking is not None]
    assert len(found) == 2 and {f.user_id for f in found} == {
        user_id
    }  # each store knows its own session only


@pytest.mark.slow
def test_redis_sessions_survive_an_api_restart(pg_url: str, redis_prefix: str, tmp_path: Path) -> None:
    """Two real uvicorn processes one after the other: the second knows the first one's session."""
    env = {
        "PZONE_DATABASE_URL": pg_url,
        "PZONE_DATA_DIR": str(tmp_path / "data"),
        "PZONE_COOKIE_SECURE": "false",
        "PZONE_REDIS_URL": TEST_REDIS_URL,
        "PZONE_TEST_REDIS_PREFIX": redis_prefix,
    }
    with api_process(env) as base_url, httpx.Client(base_url=base_url) as first:
        response = first.post("/api/auth/signup", json={"email": "ana@example.com", "password": PASSWORD})
        assert response.status_code == 201, response.text
        token, csrf = response.cookies[SESSION], response.json()["csrf_token"]
    # the first process has exited (SIGTERM, graceful); a new one must know the session
    with api_process(env) as base_url, httpx.Client(base_url=base_url, cookies={SESSION: token}) as second:
        me = second.get("/api/auth/me")
        assert me.status_code == 200, me.text
        assert me.json()["email"] == "ana@example.com" and me.json()["csrf_token"] == csrf
        assert second.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        second.cookies.set(SESSION, token)
        assert second.get("/api/auth/me").status_code == 401


def test_sql_sessions_survive_a_new_app(db_url: str, tmp_path: Path) -> None:
    """A second app (own engine, own store, own in-process state) after the first one shut down."""
    with TestClient(build_app(db_url, tmp_path, "sql", "")) as first:
        csrf = signup(first, "ana@example.com", PASSWORD)
        token = first.cookies[SESSION]
    with TestClient(build_app(db_url, tmp_path, "sql", "")) as second:
        me = me_with(second, token)
        assert me.status_code == 200 and me.json()["csrf_token"] == csrf
        assert second.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert me_with(second, token).status_code == 401


def test_text_with_a_lone_surrogate_is_refused_not_a_500(pg_url: str, tmp_path: Path) -> None:
    """JSON may escape half of a UTF-16 pair ("\\ud800"); UTF-8, the hashes and the 422's own echo of the input cannot
    encode it. Every such field is a 422 whose body is JSON, before anything is written."""
    app = make_app(pg_url, tmp_path / "data")
    add_device(pg_url)
    lone = "\\ud800"  # as it arrives in the raw JSON text

    def post(client: TestClient, path: str, raw: str, **headers: str) -> httpx.Response:
        return client.post(
            path, content=raw.encode(), headers={"Content-Type": "application/json", **headers}
        )

    with TestClient(app) as client:
        csrf = signup(client, "ana@example.com", PASSWORD)
        answers = [
            post(client, "/api/auth/signup", f'{{"email": "b{lone}@example.com", "password": "{PASSWORD}"}}'),
            post(client, "/api/auth/signup", f'{{"email": "b@example.com", "password": "{lone}{PASSWORD}"}}'),
            post(
                client, "/api/auth/login", f'{{"email": "ana{lone}@example.com", "password": "{PASSWORD}"}}'
            ),
            post(client, "/api/auth/login", f'{{"email": "ana@example.com", "password": "{lone}"}}'),
            post(
                client,
                "/api/auth/password",
                f'{{"current_password": "{lone}", "new_password": "{PASSWORD}!"}}',
                **{"X-CSRF-Token": csrf},
            ),
            post(
                client,
                "/api/auth/password",
                f'{{"current_password": "{PASSWORD}", "new_password": "{lone}{PASSWORD}"}}',
                **{"X-CSRF-Token": csrf},
            ),
            post(
                client,
                "/api/photos",
                f'{{"device_id": "dev{lone}", "content_type": "image/jpeg", "size": 10}}',
                **{"X-CSRF-Token": csrf},
            ),
        ]
        # A wrong current password is an answer (401), the rest are refusals; none is a server error.
        assert [a.status_code for a in answers] == [422, 422, 422, 422, 401, 422, 422], [
            a.text for a in answers
        ]
        for answer in answers:
            answer.json()
        assert client.get("/api/auth/me").status_code == 200  # the session and the password are as they were
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(User)).scalar_one() == 1
    finally:
        engine.dispose()
