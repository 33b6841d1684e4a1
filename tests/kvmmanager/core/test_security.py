from __future__ import annotations

from kvmmanager.core import security


def test_password_hash_is_argon2id_and_verifies() -> None:
    h = security.hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert security.verify_password(h, "correct horse")
    assert not security.verify_password(h, "wrong horse")
    assert not security.verify_password("not-a-hash", "correct horse")
    assert not security.password_needs_rehash(h)


def test_generated_secrets_are_random_and_long() -> None:
    passwords = {security.generate_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) == 20 and p.isalnum() for p in passwords)
    token = security.generate_token()
    assert token.startswith(security.TOKEN_PREFIX)
    assert len(token) >= len(security.TOKEN_PREFIX) + 43  # 32 bytes, base64url
    assert security.generate_token() != token


def test_token_hash_is_sha256_hex_and_stable() -> None:
    h = security.hash_token("kvmm_abc")
    assert len(h) == 64 and int(h, 16) >= 0
    assert h == security.hash_token("kvmm_abc")
    assert h != security.hash_token("kvmm_abd")
    assert security.token_display_prefix("kvmm_abcdefghijk") == "kvmm_abcdefg"


def test_csrf_compare() -> None:
    a = security.generate_csrf_token()
    assert security.constant_time_equal(a, a)
    assert not security.constant_time_equal(a, a + "x")
    assert not security.constant_time_equal(None, a)
    assert not security.constant_time_equal(a, None)
