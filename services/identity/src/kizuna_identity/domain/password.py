"""Password rules (NIST SP 800-63B: length and a block list, no composition rules)."""

from __future__ import annotations

MIN_LENGTH = 10
MAX_LENGTH = 256
COMMON = frozenset(
    {
        "password123",
        "password1234",
        "1234567890",
        "0123456789",
        "qwertyuiop",
        "iloveyou123",
        "letmein1234",
        "welcome123",
        "administrator",
        "passw0rd123",
        "abc1234567",
        "qwerty12345",
        "1q2w3e4r5t",
        "zaq12wsxcde",
        "11111111111",
    }
)


def check_password(password: str, login_id: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"password must have at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered in COMMON or len(set(password)) < 4:
        raise WeakPassword("password is too easy to guess")
    local_part = login_id.partition("@")[0]
    if len(local_part) >= 4 and local_part in lowered:
        raise WeakPassword("password must not contain the login id")


class WeakPassword(ValueError):
    pass
