"""SHA-512 crypt(3) (`$6$`, Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512"),
so a clear password given to the manager reaches a cloud-init seed only as a hash.

Python's `crypt` module is deprecated (gone in 3.13) and not on every platform; this is
the published algorithm on hashlib, checked against the specification's test vectors.

    sha512_crypt("s3cret")                      # '$6$<16 random chars>$<86 chars>'
"""

from __future__ import annotations

import hashlib
import secrets

ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ROUNDS_DEFAULT = 5000
# The byte order of the final base-64 encoding (groups of three, then one left over).
ORDER = [
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
    (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
    (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38),
    (18, 39, 60), (40, 61, 19), (62, 20, 41),
]  # fmt: skip


def _b64(value: int, n: int) -> str:
    out = []
    for _ in range(n):
        out.append(ALPHABET[value & 0x3F])
        value >>= 6
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // 64 + 1))[:length]


def sha512_crypt(password: str, salt: str | None = None, rounds: int = ROUNDS_DEFAULT) -> str:
    pw = password.encode()
    if salt is None:
        salt = "".join(secrets.choice(ALPHABET) for _ in range(16))
    s = salt[:16].encode()
    b = hashlib.sha512(pw + s + pw).digest()
    a = hashlib.sha512(pw + s + _repeat(b, len(pw)))
    n = len(pw)
    while n > 0:
        a.update(b if n & 1 else pw)
        n >>= 1
    a_digest = a.digest()
    p = _repeat(hashlib.sha512(pw * len(pw)).digest(), len(pw))
    ds = _repeat(hashlib.sha512(s * (16 + a_digest[0])).digest(), len(s))
    c = a_digest
    for i in range(rounds):
        h = hashlib.sha512(p if i & 1 else c)
        if i % 3:
            h.update(ds)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    encoded = "".join(_b64((c[x] << 16) | (c[y] << 8) | c[z], 4) for x, y, z in ORDER)
    encoded += _b64(c[63], 2)
    prefix = "$6$" if rounds == ROUNDS_DEFAULT else f"$6$rounds={rounds}$"
    return f"{prefix}{salt[:16]}${encoded}"
