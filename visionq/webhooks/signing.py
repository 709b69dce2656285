"""A webhook's signature: HMAC-SHA256 of `timestamp.body` under VISIONQ_WEBHOOK_SECRET.

Sent as `Visionq-Timestamp: <unix seconds>` and `Visionq-Signature: sha256=<hex>`. The timestamp is
inside the signed text, so a receiver that refuses old timestamps (WEBHOOK_TOLERANCE_S) refuses a
captured request replayed later; the body is signed as sent, byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from visionq import constants

TIMESTAMP_HEADER = "Visionq-Timestamp"
SIGNATURE_HEADER = "Visionq-Signature"
_PREFIX = "sha256="


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return _PREFIX + mac.hexdigest()


def verify(
    secret: str,
    *,
    timestamp: str,
    signature: str,
    body: bytes,
    now: float | None = None,
    tolerance_s: float = constants.WEBHOOK_TOLERANCE_S,
) -> bool:
    """What a receiver checks: the signature is this body's at this timestamp, and the timestamp is
    recent (within `tolerance_s` either way)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)
