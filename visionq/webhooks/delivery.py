"""Sending one webhook: a signed POST of the job's JSON to an address that passed the check."""

from __future__ import annotations

import ipaddress
import time

import httpx

from visionq import __version__, constants
from visionq.errors import InvalidRequest
from visionq.webhooks.address import resolve_callback_url
from visionq.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

DELIVERY_HEADER = "Visionq-Delivery"


class DeliveryFailed(Exception):
    """The receiver did not take the webhook (no 2xx answer); `reason` says what happened instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def deliver(
    url: str,
    body: bytes,
    *,
    secret: str,
    delivery_id: str,
    allow_private: bool,
    timeout_s: float = constants.WEBHOOK_TIMEOUT_S,
) -> int:
    """POST `body` (JSON) to `url`, signed; the receiver's 2xx status, or DeliveryFailed.

    The address is checked again at each delivery (what a name resolves to may have changed since the
    submit), and the request goes to that checked address. Redirects are not followed: a 3xx could
    point anywhere, the checks would not have seen it.
    """
    try:
        parts, port, addresses = resolve_callback_url(url, allow_private=allow_private)
    except InvalidRequest as exc:
        raise DeliveryFailed(exc.message) from None
    host, address = parts.hostname or "", addresses[0]
    pinned = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    target = parts._replace(netloc=f"{pinned}:{port}").geturl()
    timestamp = int(time.time())
    headers = {
        "Host": parts.netloc,
        "Content-Type": "application/json",
        "User-Agent": f"visionq/{__version__}",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        DELIVERY_HEADER: delivery_id,
    }
    try:
        # sni_hostname: TLS is negotiated, and its certificate checked, for the name, not the address.
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            response = client.post(target, content=body, headers=headers, extensions={"sni_hostname": host})
    except httpx.TimeoutException:
        raise DeliveryFailed(f"no answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
    if not 200 <= response.status_code < 300:
        reason = f"HTTP {response.status_code}"
        if response.is_redirect:
            reason += " (redirects are not followed)"
        raise DeliveryFailed(reason)
    return response.status_code
