"""What a password must be: long enough, and not guessable.

Guessability is zxcvbn's estimate (Dropbox's algorithm, the `zxcvbn` package): it matches
the password against its bundled lists of common passwords, words and names, keyboard
patterns, dates, repeats and sequences, and against the words of the account itself (the
user name, the product's name). A score below MIN_SCORE ("very guessable": fewer than
10^6 guesses) is refused, as NIST SP 800-63B asks for passwords found in breach corpora
and dictionaries. The estimate looks at the first 72 characters (zxcvbn's own bound on
its work), which any password that long already passes on its own.
"""

from __future__ import annotations

from zxcvbn import zxcvbn

MIN_LENGTH = 8
MAX_LENGTH = 1024
MIN_SCORE = 2
_SCORED_PREFIX = 72
_PRODUCT_WORDS = ("kvm", "manager", "kvmmanager", "kvm-manager", "libvirt", "qemu", "admin")


def password_problem(password: str, *, username: str | None = None) -> str | None:
    """Why `password` is refused (a sentence for the user), or None when it is accepted."""
    if len(password) < MIN_LENGTH:
        return f"password must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password must be at most {MAX_LENGTH} characters"
    words = [*_PRODUCT_WORDS, *([username] if username else [])]
    result = zxcvbn(password[:_SCORED_PREFIX], user_inputs=words)
    if result["score"] >= MIN_SCORE:
        return None
    feedback = result.get("feedback") or {}
    why = feedback.get("warning") or "it is easy to guess"
    hints = " ".join(feedback.get("suggestions") or [])
    return f"password is too easy to guess: {why.rstrip('.')}." + (f" {hints}" if hints else "")
