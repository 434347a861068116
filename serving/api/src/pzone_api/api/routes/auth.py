"""Sign-up, login, logout and the current user (cookie sessions with a double-submit CSRF token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from pzone.db.models import User
from pzone_api.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    BrowserKeyDep,
    CurrentSession,
    CurrentUser,
    DbDep,
    LoginLimiterDep,
    PasswordHashingDep,
    SessionStoreDep,
    SettingsDep,
    SignupLimiterDep,
)
from pzone_api.api.errors import BAD_BODY, CSRF, SAME_ORIGIN, SIGNED_IN, TOO_MANY, message
from pzone_api.api.fields import NO_NUL
from pzone_api.ratelimit import (
    AttemptLimiter,
    LoginKeys,
    browser_mark,
    is_known_browser,
    login_keys,
    signup_limit_key,
)
from pzone_api.security import (
    EMAIL_MAX_CHARS,
    PASSWORD_MAX_CHARS,
    PASSWORD_MIN_CHARS,
    EmailTaken,
    InvalidEmail,
    WeakPassword,
    authenticate,
    check_password_policy,
    create_user,
    is_unicode_text,
    normalize_email,
    origin_matches_host,
)
from pzone_api.sessions import SessionStore
from pzone_api.settings import Settings

router = APIRouter(prefix="/api/auth", tags=["auth"])

BAD_CREDENTIALS = "Invalid email or password."
KNOWN_BROWSER_COOKIE = "pzone_browser"
KNOWN_BROWSER_TTL_S = 365 * 24 * 3600


# Passwords are checked in the routes, not by pydantic: its 422 answers echo the rejected input back.
class SignupIn(BaseModel):
    email: Annotated[
        str, Field(max_length=EMAIL_MAX_CHARS + 64, pattern=NO_NUL, examples=["ana@example.com"])
    ]
    password: Annotated[str, Field(description=f"{PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters")]


class LoginIn(BaseModel):
    email: Annotated[str, Field(max_length=EMAIL_MAX_CHARS + 64, pattern=NO_NUL)]
    password: str


class PasswordChangeIn(BaseModel):
    current_password: str
    new_password: Annotated[
        str, Field(description=f"{PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters")
    ]


def _field_error(field: str, message: str) -> dict[str, object]:
    """One entry of a 422 ``detail`` list, shaped like FastAPI's own (without the rejected input)."""
    return {"type": "value_error", "loc": ["body", field], "msg": message}


class UserOut(BaseModel):
    id: str
    email: str
    role: str


class AuthOut(BaseModel):
    user: UserOut
    csrf_token: str


class MeOut(UserOut):
    csrf_token: str


def require_same_origin(request: Request) -> None:
    """403 when an ``Origin`` header names another host (a cross-site form or script posting credentials)."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    if not origin_matches_host(origin, request.headers.get("host", ""), request.url.scheme):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="Cross-site request refused: the Origin header does not match this site.",
        )


def _reserve_or_429(limiter: AttemptLimiter, limits: dict[str, int], too_many: str) -> None:
    """Reserve one attempt against each key before any password is hashed, or answer 429 with Retry-After."""
    wait_s = limiter.reserve(limits)
    if wait_s:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"{too_many}; try again in {wait_s} s.",
            headers={"Retry-After": str(wait_s)},
        )


def _client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _login_keys(request: Request, settings: Settings, browser_key: bytes, email: str) -> LoginKeys:
    return login_keys(
        email,
        _client_ip(request),
        per_pair=settings.login_max_attempts,
        per_email=settings.login_max_per_email,
        per_address=settings.login_max_per_address,
        known_browser=is_known_browser(browser_key, email, request.cookies.get(KNOWN_BROWSER_COOKIE)),
    )


def _mark_browser(response: Response, browser_key: bytes, email: str, settings: Settings) -> None:
    """Remember that this browser signed in to the account: it keeps signing in while others guess at it."""
    response.set_cookie(
        KNOWN_BROWSER_COOKIE,
        browser_mark(browser_key, email),
        max_age=KNOWN_BROWSER_TTL_S,
        path="/api/auth",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )


def _set_session_cookies(response: Response, token: str, csrf_token: str, settings: Settings) -> None:
    for name, value, httponly in ((SESSION_COOKIE, token, True), (CSRF_COOKIE, csrf_token, False)):
        response.set_cookie(
            name,
            value,
            max_age=settings.session_ttl_s,
            path="/",
            secure=settings.cookie_secure,
            httponly=httponly,
            samesite="lax",
        )


def _clear_session_cookies(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=settings.cookie_secure, httponly=True, samesite="lax"
    )
    response.delete_cookie(
        CSRF_COOKIE, path="/", secure=settings.cookie_secure, httponly=False, samesite="lax"
    )


def _start_session(
    request: Request, response: Response, user: User, sessions: SessionStore, settings: Settings
) -> AuthOut:
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:  # a new login never keeps the old token alive (no session fixation)
        sessions.delete(previous)
    token, data = sessions.create(user.id)
    _set_session_cookies(response, token, data.csrf_token, settings)
    return AuthOut(user=UserOut(id=user.id, email=user.email, role=user.role), csrf_token=data.csrf_token)


@router.post(
    "/signup",
    status_code=status.HTTP_201_CREATED,
    response_model=AuthOut,
    dependencies=[Depends(require_same_origin)],
    responses=BAD_BODY | SAME_ORIGIN | message(409, "An account with this email already exists.") | TOO_MANY,
)
def signup(
    body: SignupIn,
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    sessions: SessionStoreDep,
    hashing: PasswordHashingDep,
    limiter: SignupLimiterDep,
    browser_key: BrowserKeyDep,
) -> AuthOut:
    """Create a client account and log it in; sign-ups per client address are limited (429 with Retry-After)."""
    errors = []
    try:
        email = normalize_email(body.email)
    except InvalidEmail as exc:
        errors.append(_field_error("email", str(exc)))
    try:
        check_password_policy(body.password)
    except WeakPassword as exc:
        errors.append(_field_error("password", str(exc)))
    if errors:
        raise HTTPException(422, detail=errors)
    # before the hash, as for logins
    _reserve_or_429(
        limiter,
        {signup_limit_key(_client_ip(request)): settings.signup_max_per_address},
        "Too many sign-ups from this address",
    )
    try:
        user = create_user(db, email, body.password, "client", hashing=hashing)
        db.commit()
    except EmailTaken:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="An account with this email already exists."
        ) from None
    _mark_browser(response, browser_key, user.email, settings)
    return _start_session(request, response, user, sessions, settings)


@router.post(
    "/login",
    response_model=AuthOut,
    dependencies=[Depends(require_same_origin)],
    responses=BAD_BODY | message(401, BAD_CREDENTIALS) | SAME_ORIGIN | TOO_MANY,
)
def login(
    body: LoginIn,
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    sessions: SessionStoreDep,
    limiter: LoginLimiterDep,
    hashing: PasswordHashingDep,
    browser_key: BrowserKeyDep,
) -> AuthOut:
    """Log in with email and password; sets the session and CSRF cookies, and marks the browser as one that signed
    in to the account."""
    if not body.password or len(body.password) > PASSWORD_MAX_CHARS or not is_unicode_text(body.password):
        raise HTTPException(
            422,
            detail=[
                _field_error(
                    "password", f"password must be 1 to {PASSWORD_MAX_CHARS} characters of Unicode text"
                )
            ],
        )
    email = body.email.strip().lower()  # no format check: a malformed address is simply not found (401)
    keys = _login_keys(request, settings, browser_key, email)
    # before the hash: parallel attempts count at once
    _reserve_or_429(limiter, dict(keys.limits), "Too many failed logins")
    user = authenticate(db, email, body.password, hashing=hashing)
    if user is None:  # the reservation stays: it is the failure counted
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=BAD_CREDENTIALS)
    keys.after_success(limiter)
    _mark_browser(response, browser_key, email, settings)
    return _start_session(request, response, user, sessions, settings)


@router.post(
    "/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=SIGNED_IN | CSRF
)
def logout(
    request: Request, session: CurrentSession, sessions: SessionStoreDep, settings: SettingsDep
) -> Response:
    """End the current session (CSRF header required) and clear the cookies."""
    del session  # resolved for its checks: a live session and a matching CSRF header
    sessions.delete(request.cookies.get(SESSION_COOKIE, ""))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_session_cookies(response, settings)
    return response


@router.post(
    "/logout-everywhere",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=SIGNED_IN | CSRF,
)
def logout_everywhere(
    user: CurrentUser, session: CurrentSession, sessions: SessionStoreDep, settings: SettingsDep
) -> Response:
    """End every session of the user, this one included (a lost phone, a shared computer), and clear the cookies."""
    del session  # resolved for its checks: a live session and a matching CSRF header
    sessions.delete_user(user.id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_session_cookies(response, settings)
    return response


@router.post(
    "/password",
    response_model=AuthOut,
    responses=BAD_BODY
    | message(401, "Not signed in, the session expired, or the current password is not right.")
    | CSRF
    | TOO_MANY,
)
def change_password(
    body: PasswordChangeIn,
    request: Request,
    response: Response,
    user: CurrentUser,
    session: CurrentSession,
    db: DbDep,
    settings: SettingsDep,
    sessions: SessionStoreDep,
    limiter: LoginLimiterDep,
    hashing: PasswordHashingDep,
    browser_key: BrowserKeyDep,
) -> AuthOut:
    """Change the password with the current one: every other session ends, this client gets a new one. The current
    password is guessed no more often here than at log-in (the same limits)."""
    del session  # resolved for its checks: a live session and a matching CSRF header
    try:
        check_password_policy(body.new_password)
    except WeakPassword as exc:
        raise HTTPException(422, detail=[_field_error("new_password", str(exc))]) from None
    keys = _login_keys(request, settings, browser_key, user.email)
    _reserve_or_429(limiter, dict(keys.limits), "Too many failed logins")
    checked = None
    current = body.current_password
    if 0 < len(current) <= PASSWORD_MAX_CHARS and is_unicode_text(current):  # none no account can have
        checked = authenticate(db, user.email, current, hashing=hashing)
    if checked is None or checked.id != user.id:  # the reservation stays: it is the failure counted
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="The current password is not right.")
    keys.after_success(limiter)
    checked.password_hash = hashing.hash(body.new_password)
    db.commit()
    sessions.delete_user(user.id)  # whoever knew the old password is signed out
    return _start_session(request, response, checked, sessions, settings)


@router.get("/me", response_model=MeOut, responses=SIGNED_IN)
def me(user: CurrentUser, session: CurrentSession) -> MeOut:
    """The logged-in user and the session's CSRF token."""
    return MeOut(id=user.id, email=user.email, role=user.role, csrf_token=session.csrf_token)
