"""Password hashing, gateway-key generation and hashing, and redaction of secrets."""
from __future__ import annotations

import hashlib
import hmac
import secrets

from werkzeug.security import check_password_hash, generate_password_hash

KEY_PREFIX = "kw-"
VISIBLE_PREFIX_LEN = 10


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def verify_password(password_hash: str, password: str) -> bool:
    return check_password_hash(password_hash, password)


def new_gateway_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_gateway_key(key: str) -> str:
    # Gateway keys carry 256 bits of entropy, so a fast unsalted hash is safe
    # and lets the lookup be a single indexed equality.
    return hashlib.sha256(key.encode()).hexdigest()


def visible_prefix(key: str) -> str:
    return key[:VISIBLE_PREFIX_LEN]


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_request_id() -> str:
    return "gen-" + secrets.token_hex(12)
