"""Sign-up, login, logout and the current user (cookie sessions with a double-submit CSRF token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from pzone.db.models import User
from pzone_api.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    CurrentSession,
    CurrentUser,
    DbDep,
    LoginLimiterDep,
    PasswordHashingDep,
    SessionStoreDep,
    SettingsDep,
    SignupLimiterDep,
)
from pzone_api.ratelimit import AttemptLimiter, login_limit_keys, signup_limit_key
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
    normalize_email,
    origin_matches_host,
)
from pzone_api.sessions import SessionStore
from pzone_api.settings import Settings

router = APIRouter(prefix="/api/auth", tags=["auth"])

BAD_CREDENTIALS = "Invalid email or password."


# Passwords are checked in the routes, not by pydantic: its 422 answers echo the rejected input back.
class SignupIn(BaseModel):
    email: Annotated[str, Field(max_length=EMAIL_MAX_CHARS + 64, examples=["ana@example.com"])]
    password: Annotated[str, Field(description=f"{PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters")]


class LoginIn(BaseModel):
    email: Annotated[str, Field(max_length=EMAIL_MAX_CHARS + 64)]
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


def _reserve_or_429(limiter: AttemptLimiter, keys: tuple[str, ...], too_many: str) -> None:
    """Reserve one attempt against ``keys`` before any password is hashed, or answer 429 with Retry-After."""
    wait_s = limiter.reserve(keys)
    if wait_s:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"{too_many}; try again in {wait_s} s.",
            headers={"Retry-After": str(wait_s)},
        )


def _client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


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
    _reserve_or_429(limiter, (signup_limit_key(_client_ip(request)),), "Too many sign-ups from this address")
    try:
        user = create_user(db, email, body.password, "client", hashing=hashing)
        db.commit()
    except EmailTaken:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="An account with this email already exists."
        ) from None
    return _start_session(request, response, user, sessions, settings)


@router.post("/login", response_model=AuthOut, dependencies=[Depends(require_same_origin)])
def login(
    body: LoginIn,
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    sessions: SessionStoreDep,
    limiter: LoginLimiterDep,
    hashing: PasswordHashingDep,
) -> AuthOut:
    """Log in with email and password; sets the session and CSRF cookies."""
    if not body.password or len(body.password) > PASSWORD_MAX_CHARS:
        raise HTTPException(
            422,
            detail=[_field_error("password", f"password must be 1 to {PASSWORD_MAX_CHARS} characters long")],
        )
    email = body.email.strip().lower()  # no format check: a malformed address is simply not found (401)
    email_key, ip_key = login_limit_keys(email, _client_ip(request))
    # before the hash: parallel attempts count at once
    _reserve_or_429(limiter, (email_key, ip_key), "Too many failed logins")
    user = authenticate(db, email, body.password, hashing=hashing)
    if user is None:  # the reservation stays: it is the failure counted
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=BAD_CREDENTIALS)
    limiter.reset(email_key)
    limiter.release((ip_key,))
    return _start_session(request, response, user, sessions, settings)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def logout(
    request: Request, session: CurrentSession, sessions: SessionStoreDep, settings: SettingsDep
) -> Response:
    """End the current session (CSRF header required) and clear the cookies."""
    del session  # resolved for its checks: a live session and a matching CSRF header
    sessions.delete(request.cookies.get(SESSION_COOKIE, ""))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_session_cookies(response, settings)
    return response


@router.post("/logout-everywhere", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def logout_everywhere(
    user: CurrentUser, session: CurrentSession, sessions: SessionStoreDep, settings: SettingsDep
) -> Response:
    """End every session of the user, this one included (a lost phone, a shared computer), and clear the cookies."""
    del session  # resolved for its checks: a live session and a matching CSRF header
    sessions.delete_user(user.id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_session_cookies(response, settings)
    return response


@router.post("/password", response_model=AuthOut)
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
) -> AuthOut:
    """Change the password with the current one: every other session ends, this client gets a new one. The current
    password is guessed no more often here than at log-in (the same limits)."""
    del session  # resolved for its checks: a live session and a matching CSRF header
    try:
        check_password_policy(body.new_password)
    except WeakPassword as exc:
        raise HTTPException(422, detail=[_field_error("new_password", str(exc))]) from None
    email_key, ip_key = login_limit_keys(user.email, _client_ip(request))
    _reserve_or_429(limiter, (email_key, ip_key), "Too many failed logins")
    checked = None
    if 0 < len(body.current_password) <= PASSWORD_MAX_CHARS:  # no hash of a password no account can have
        checked = authenticate(db, user.email, body.current_password, hashing=hashing)
    if checked is None or checked.id != user.id:  # the reservation stays: it is the failure counted
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="The current password is not right.")
    limiter.reset(email_key)
    limiter.release((ip_key,))
    checked.password_hash = hashing.hash(body.new_password)
    db.commit()
    sessions.delete_user(user.id)  # whoever knew the old password is signed out
    return _start_session(request, response, checked, sessions, settings)


@router.get("/me", response_model=MeOut)
def me(user: CurrentUser, session: CurrentSession) -> MeOut:
    """The logged-in user and the session's CSRF token."""
    return MeOut(id=user.id, email=user.email, role=user.role, csrf_token=session.csrf_token)
