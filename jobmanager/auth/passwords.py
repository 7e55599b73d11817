"""Passwords: argon2id hashes with a per-user salt, and the lock-out after failed sign-ins.

A password is never stored or logged in clear: only an argon2id hash in the PHC
format (``$argon2id$v=19$m=19456,t=2,p=1$salt$hash``) reaches the store. The
parameters are OWASP's current advice (Password Storage Cheat Sheet, "Argon2id":
m=19 MiB, t=2, p=1). Hashes made by older versions (``scrypt$n$r$p$salt$hash``)
still verify, and :func:`needs_rehash` tells sign-in to replace them with
argon2id the next time their owner signs in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from jobmanager.errors import BadParams

#: OWASP Password Storage Cheat Sheet, Argon2id: "a minimum configuration of 19 MiB of memory,
#: an iteration count of 2, and 1 degree of parallelism" (about 0.05-0.1 s a hash here).
ARGON2_MEMORY_KIB, ARGON2_TIME_COST, ARGON2_PARALLELISM = 19 * 1024, 2, 1
#: failed sign-ins in a row that lock an account, and for how long (seconds)
MAX_FAILURES = 5
LOCKOUT_S = 300.0
MIN_PASSWORD_LENGTH = 8

_HASHER = PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB,
                         parallelism=ARGON2_PARALLELISM, hash_len=32, salt_len=16, type=Type.ID)


def hash_password(password: str, *, check_strength: bool = True) -> str:
    """An argon2id hash of ``password``; a new password's strength is checked first.

    ``check_strength=False`` is for re-hashing a password that already signed in (an old hash
    being upgraded), which must not fail because the rules got stricter since it was set.
    """
    if check_strength:
        check_password_strength(password)
    return _HASHER.hash(password)


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (argon2id, or a legacy scrypt hash); constant time."""
    if not stored or not isinstance(password, str):
        return False
    if stored.startswith("scrypt$"):
        return _verify_scrypt(password, stored)
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True for a hash that is not argon2id with today's parameters (rehash it on the next sign-in)."""
    if not stored.startswith("$argon2id$"):
        return True
    try:
        return _HASHER.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


def _verify_scrypt(password: str, stored: str) -> bool:
    """Hashes written before argon2id: ``scrypt$n$r$p$salt$hash`` (hashlib.scrypt)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def check_password_strength(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise BadParams(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def generate_password() -> str:
    """A one-time password for a new administrator (printed once, never stored in clear)."""
    return secrets.token_urlsafe(12)
