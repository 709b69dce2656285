"""A webhook's signature: what the receiver checks holds for the body as sent, and nothing else."""

from __future__ import annotations

import hashlib
import hmac

from visionq.webhooks import sign, verify

SECRET = "s3cret-for-the-tests"
BODY = b'{"id": "x", "status": "succeeded"}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, BODY) == f"sha256={expected}"


def test_a_receiver_accepts_a_fresh_signed_body() -> None:
    signature = sign(SECRET, 1700000000, BODY)
    assert verify(SECRET, timestamp="1700000000", signature=signature, body=BODY, now=1700000010)


def test_a_changed_body_another_secret_or_another_timestamp_is_refused() -> None:
    signature = sign(SECRET, 1700000000, BODY)
    now = 1700000010.0
    assert not verify(SECRET, timestamp="1700000000", signature=signature, body=BODY + b" ", now=now)
    assert not verify("another-secret", timestamp="1700000000", signature=signature, body=BODY, now=now)
    assert not verify(SECRET, timestamp="1700000001", signature=signature, body=BODY, now=now)
    assert not verify(SECRET, timestamp="soon", signature=signature, body=BODY, now=now)


def test_a_replay_after_the_tolerance_is_refused() -> None:
    signature = sign(SECRET, 1700000000, BODY)
    assert verify(SECRET, timestamp="1700000000", signature=signature, body=BODY, now=1700000299)
    assert not verify(SECRET, timestamp="1700000000", signature=signature, body=BODY, now=1700000301)
