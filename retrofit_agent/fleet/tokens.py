"""Device tokens: 32 random bytes, stored as their sha256.

A token is `secrets.token_urlsafe(32)` (256 bits, 43 characters that fit RFC 6750's
b64token, so the device's `read_token` takes it as it is). The database holds only its
sha256: a leaked table gives nobody a token. A slow KDF (bcrypt, argon2) protects guessable
secrets such as passwords; nobody can enumerate 2^256 tokens, so a fast hash loses nothing
and keeps the per-request lookup at microseconds. No server secret (HMAC key) either: there
would be one more thing to distribute to every ingest host and to rotate, for no gain over a
random token.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
