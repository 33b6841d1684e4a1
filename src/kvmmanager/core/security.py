"""Password hashing (argon2id), random secrets, token hashing and CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import sys

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults are RFC 9106's low-memory recommendation for argon2id. Nothing in
# the product changes them: no setting, no environment variable, no config file.
PRODUCTION_HASHER = PasswordHasher()
# The cheapest parameters argon2 accepts. Only the test suite installs them (tests/conftest.py
# calls use_test_password_hashing), because a production-strength hash costs ~0.3 s and
# ~240 tests create users.
_TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class _Active:
    """The hasher in use; a holder rather than a `global` rebinding."""

    hasher: PasswordHasher = PRODUCTION_HASHER


def use_test_password_hashing() -> None:
    """Switch this process to the test-only argon2 parameters. Refused unless pytest is
    running this process, so no production code path can ever reach it by mistake."""
    if "pytest" not in sys.modules:
        raise RuntimeError("the test-only password hashing is for the test suite (pytest) only")
    _Active.hasher = _TEST_HASHER


TOKEN_PREFIX = "kvmm_"  # noqa: S105  (a marker, not a secret)
# Shown in listings so a user can tell tokens apart without the secret.
TOKEN_DISPLAY_CHARS = 12
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def hash_password(password: str) -> str:
    return _Active.hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _Active.hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _Active.hasher.check_needs_rehash(password_hash)


def generate_password(length: int = 20) -> str:
    """A random password without look-alike-prone punctuation, easy to paste."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))


def generate_token() -> str:
    """A new API token secret: the prefix plus 32 random bytes, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    """sha256 is enough here: the secret has 256 random bits, nothing to brute-force."""
    return hashlib.sha256(secret.encode()).hexdigest()


def token_display_prefix(secret: str) -> str:
    return secret[:TOKEN_DISPLAY_CHARS]


def generate_session_id() -> str:
    return secrets.token_urlsafe(32)


def generate_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def constant_time_equal(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    return hmac.compare_digest(a.encode(), b.encode())
