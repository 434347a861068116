"""Passwords, accounts and request-origin checks of the web front's login.

* Passwords are hashed with argon2id (argon2-cffi's :class:`~argon2.PasswordHasher`); a hash made with other
  parameters is replaced on the next successful login (:func:`authenticate`).
* Policy: passwords of 10 to 256 characters; e-mail addresses stripped, lower-cased and checked simply (one ``@``,
  a dotted domain, at most 320 characters). :func:`normalize_email` and :func:`check_password_policy` raise
  ``ValueError`` subclasses whose message is the reason, shown as is in 422 answers.
* :func:`authenticate` costs one hash verification whether or not the address is known (a dummy hash stands in for
  unknown ones), so timing does not tell which addresses have accounts.

Sessions live in :mod:`pzone_api.sessions`, failed-login limits in :mod:`pzone_api.ratelimit`.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import uuid
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pzone.db.models import User

ROLES = ("client", "operator")
PASSWORD_MIN_CHARS = 10
PASSWORD_MAX_CHARS = 256
EMAIL_MAX_CHARS = 320


class InvalidEmail(ValueError):
    """The address breaks the simple e-mail rules; the message says which."""


class WeakPassword(ValueError):
    """The password breaks the policy; the message says how."""


class EmailTaken(Exception):
    """An account with this (normalized) address exists already."""


def normalize_email(raw: str) -> str:
    """Stripped and lower-cased address, or :class:`InvalidEmail` with the reason."""
    email = raw.strip().lower()
    if not email:
        raise InvalidEmail("email is empty")
    if len(email) > EMAIL_MAX_CHARS:
        raise InvalidEmail(f"email is longer than {EMAIL_MAX_CHARS} characters")
    if any(ch.isspace() for ch in email):
        raise InvalidEmail("email contains whitespace")
    if email.count("@") != 1:
        raise InvalidEmail("email must contain exactly one @")
    local, domain = email.split("@")
    if not local:
        raise InvalidEmail("email has nothing before the @")
    if "." not in domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
        raise InvalidEmail("email domain must be a dotted name such as example.com")
    return email


def is_unicode_text(text: str) -> bool:
    """False for a string holding a lone UTF-16 surrogate (JSON allows "\\ud800"; UTF-8, and so hashing, cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_password_policy(password: str) -> str:
    """The password itself when it meets the policy, else :class:`WeakPassword` with the reason."""
    if not is_unicode_text(password):
        raise WeakPassword("password must be valid Unicode text")
    if len(password) < PASSWORD_MIN_CHARS:
        raise WeakPassword(f"password must be at least {PASSWORD_MIN_CHARS} characters long")
    if len(password) > PASSWORD_MAX_CHARS:
        raise WeakPassword(f"password must be at most {PASSWORD_MAX_CHARS} characters long")
    if not password.strip():
        raise WeakPassword("password must not be only whitespace")
    return password


# What the API may spend on password hashes at once: four argon2id hashes of 64 MiB (argon2-cffi's default), a
# quarter of the API pod's 1 GiB limit, whatever the threadpool's size (40 threads would otherwise be 2.5 GiB).
DEFAULT_HASH_MEMORY_MIB = 256


def hash_slots(hasher: PasswordHasher, memory_budget_mib: int) -> int:
    """How many hashes fit in ``memory_budget_mib`` at once (``memory_cost`` is in KiB); at least one."""
    return max(1, memory_budget_mib * 1024 // hasher.memory_cost)


class PasswordHashing:
    """An argon2id hasher plus a dummy hash with the same parameters (verified for unknown accounts).

    At most :func:`hash_slots` hashes or verifications run at once; the rest wait for a slot, so the memory they
    take is bounded by ``memory_budget_mib`` however many requests arrive together."""

    def __init__(
        self, hasher: PasswordHasher | None = None, *, memory_budget_mib: int = DEFAULT_HASH_MEMORY_MIB
    ) -> None:
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 "low memory" profile by default
        self.slots = hash_slots(self.hasher, memory_budget_mib)
        self._running = threading.BoundedSemaphore(self.slots)
        self._dummy: str | None = None
        self._lock = threading.Lock()

    def hash(self, password: str) -> str:
        with self._running:
            return self.hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; with ``stored_hash=None`` the dummy hash is checked (always False)."""
        target = stored_hash if stored_hash is not None else self._dummy_hash()
        try:
            with self._running:
                ok = self.hasher.verify(target, password)
        except (VerificationError, InvalidHashError):
            return False
        return bool(ok) and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError):
            return True

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            with self._lock:
                if self._dummy is None:
                    self._dummy = self.hash(secrets.token_urlsafe(24))
        return self._dummy


DEFAULT_PASSWORD_HASHING = PasswordHashing()


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.execute(select(User).where(User.email == email)).scalar_one_or_none()


def create_user(
    session: Session,
    email: str,
    password: str,
    role: str = "client",
    *,
    hashing: PasswordHashing | None = None,
) -> User:
    """Add a user after checking the address, the password policy and the role; flushes, the caller commits.

    Raises :class:`InvalidEmail`, :class:`WeakPassword`, ``ValueError`` (unknown role) or :class:`EmailTaken`
    (after rolling the session back when the database's unique constraint caught a concurrent sign-up).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    email = normalize_email(email)
    check_password_policy(password)
    if session.execute(select(func.count()).select_from(User).where(User.email == email)).scalar_one():
        raise EmailTaken(email)
    user = User(
        id=str(uuid.uuid4()),
        email=email,
        password_hash=(hashing or DEFAULT_PASSWORD_HASHING).hash(password),
        role=role,
        is_active=True,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise EmailTaken(email) from exc
    return user


def authenticate(
    session: Session, email: str, password: str, *, hashing: PasswordHashing | None = None
) -> User | None:
    """The active user with these credentials, else None; one hash verification either way.

    ``email`` must be normalized already. A hash made with older parameters is replaced (and committed).
    """
    hashing = hashing or DEFAULT_PASSWORD_HASHING
    user = find_user_by_email(session, email)
    if not hashing.verify(user.password_hash if user is not None else None, password):
        return None
    assert user is not None
    if not user.is_active:
        return None
    if hashing.needs_rehash(user.password_hash):
        user.password_hash = hashing.hash(password)
        session.commit()
    return user


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _strip_default_port(netloc: str, scheme: str) -> str:
    default = _DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(f":{default}"):
        return netloc[: -len(default) - 1]
    return netloc


def origin_matches_host(origin: str, host: str, request_scheme: str = "http") -> bool:
    """Whether an ``Origin`` header names the same host (and port) as the request's ``Host`` header.

    ``Origin: null`` and unparsable origins do not match. Default ports are ignored on both sides, so
    ``https://example.com`` matches ``example.com`` and ``example.com:443``. Behind a reverse proxy, the proxy must
    pass the original ``Host`` header on (nginx: ``proxy_set_header Host $host``).
    """
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc or parts.path not in ("", "/"):
        return False
    origin_netloc = _strip_default_port(parts.netloc, parts.scheme)
    host = host.strip().lower()
    if not host:
        return False
    # The Host header carries no scheme: strip either default port (the request may have come through TLS).
    host = _strip_default_port(_strip_default_port(host, request_scheme), parts.scheme)
    return constant_time_equal(origin_netloc, host)
