"""SHA-512 crypt against the specification's test vectors (and the C library's crypt
where Python still offers it)."""

from __future__ import annotations

import warnings

import pytest

from kvmmanager.services.cloudinit.crypt import sha512_crypt

VECTORS = [
    ("Hello world!", "saltstring", 5000,
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("Hello world!", "saltstringsaltstring", 10000,
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
]  # fmt: skip


@pytest.mark.parametrize(("password", "salt", "rounds", "expected"), VECTORS)
def test_spec_vectors(password: str, salt: str, rounds: int, expected: str) -> None:
    assert sha512_crypt(password, salt, rounds) == expected


def test_random_salt_and_libc_agree() -> None:
    a, b = sha512_crypt("pässwörd"), sha512_crypt("pässwörd")
    assert a != b and a.startswith("$6$") and len(a.split("$")[2]) == 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt")
    for pw in ("", "a", "x" * 200, "pässwörd"):
        h = sha512_crypt(pw)
        assert crypt.crypt(pw, h) == h
