"""One webhook POST, against a real receiver on the loopback."""

from __future__ import annotations

import socket

import pytest

from tests.webhooks.receiver import Receiver, receiving
from visionq.webhooks import DeliveryFailed, deliver, verify
from visionq.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER

SECRET = "s3cret-for-the-tests"
BODY = b'{"id": "job", "status": "succeeded"}'


def send(url: str, *, allow_private: bool = True, timeout_s: float = 5.0) -> int:
    return deliver(
        url, BODY, secret=SECRET, delivery_id="job-1", allow_private=allow_private, timeout_s=timeout_s
    )


def test_a_delivery_posts_the_body_signed_to_the_path_and_returns_the_status() -> None:
    receiver = Receiver(statuses=[204])
    with receiving(receiver) as base:
        assert send(f"{base}/hooks/visionq?x=1") == 204
    [got] = receiver.received
    assert got.path == "/hooks/visionq?x=1"
    assert got.body == BODY
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Visionq-Delivery"] == "job-1"
    assert got.headers["Host"] == base.removeprefix("http://")
    assert verify(
        SECRET, timestamp=got.headers[TIMESTAMP_HEADER], signature=got.headers[SIGNATURE_HEADER], body=BODY
    )


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_an_answer_other_than_2xx_is_a_failed_delivery(status: int) -> None:
    with receiving(Receiver(statuses=[status])) as base, pytest.raises(DeliveryFailed) as failed:
        send(f"{base}/hook")
    assert failed.value.reason == f"HTTP {status}"


def test_a_redirect_is_not_followed() -> None:
    receiver = Receiver(statuses=[302], location="http://169.254.169.254/")
    with receiving(receiver) as base, pytest.raises(DeliveryFailed) as failed:
        send(f"{base}/hook")
    assert failed.value.reason == "HTTP 302 (redirects are not followed)"
    assert receiver.count() == 1


def test_a_receiver_that_is_down_is_a_failed_delivery() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(DeliveryFailed) as failed:
        send(f"http://127.0.0.1:{port}/hook")
    assert "ConnectError" in failed.value.reason


def test_a_receiver_that_does_not_answer_in_time_is_a_failed_delivery() -> None:
    with receiving(Receiver(delay_s=2.0)) as base, pytest.raises(DeliveryFailed) as failed:
        send(f"{base}/hook", timeout_s=0.5)
    assert failed.value.reason == "no answer within 0.5 s"


def test_a_private_address_is_checked_again_at_delivery() -> None:
    receiver = Receiver()
    with receiving(receiver) as base, pytest.raises(DeliveryFailed) as failed:
        send(f"{base}/hook", allow_private=False)
    assert "not a public address" in failed.value.reason
    assert receiver.count() == 0
