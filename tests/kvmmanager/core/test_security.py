from __future__ import annotations

import os
import subprocess
import sys

import argon2

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


def test_production_hashes_with_rfc_9106_parameters_and_cannot_switch() -> None:
    """A fresh interpreter (no pytest) with the users service imported: passwords are hashed
    with RFC 9106's low-memory argon2id parameters, and the test-only ones are refused."""
    code = (
        "import kvmmanager.services.users.service\n"
        "from kvmmanager.core import security\n"
        "print(security.hash_password('correct horse'))\n"
        "try:\n"
        "    security.use_test_password_hashing()\n"
        "except RuntimeError as e:\n"
        "    print('refused:', e)\n"
        "print(security.hash_password('correct horse'))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVMM_", "PYTEST"))}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    first, refusal, second = out.stdout.splitlines()
    strong = argon2.profiles.RFC_9106_LOW_MEMORY
    for h in (first, second):
        params = argon2.extract_parameters(h)
        assert params.type is argon2.Type.ID
        assert (params.memory_cost, params.time_cost, params.parallelism) == (
            strong.memory_cost,
            strong.time_cost,
            strong.parallelism,
        )
    assert refusal.startswith("refused: the test-only password hashing is for the test suite")


def test_the_suite_hashes_cheaply_and_verifies_hashes_made_with_other_parameters() -> None:
    params = argon2.extract_parameters(security.hash_password("x"))
    assert (params.memory_cost, params.time_cost, params.parallelism) == (8, 1, 1)
    # A stored hash carries its own parameters: one made with others still verifies, and
    # is flagged for rehashing with the parameters in use.
    other = argon2.PasswordHasher(time_cost=2, memory_cost=16, parallelism=1).hash("horse")
    assert security.verify_password(other, "horse")
    assert not security.verify_password(other, "wrong horse")
    assert security.password_needs_rehash(other)
