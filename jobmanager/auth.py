"""Passwords: scrypt hashes with a per-user salt, and the lock-out after failed sign-ins.

A password is never stored or logged in clear: only ``scrypt$n$r$p$salt$hash``
(hashlib.scrypt, memory-hard) reaches the store. Verification compares in
constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from .errors import BadParams

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: failed sign-ins in a row that lock an account, and for how long (seconds)
MAX_FAILURES = 5
LOCKOUT_S = 300.0
MIN_PASSWORD_LENGTH = 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    check_password_strength(password)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not isinstance(password, str):
        return False
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(base64.b64decode(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def check_password_strength(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise BadParams(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def generate_password() -> str:
    """A one-time password for a new administrator (printed once, never stored in clear)."""
    return secrets.token_urlsafe(12)
