"""Webhooks: where a callback may point (`address`), how a delivery is signed (`signing`) and sent
(`delivery`). The API checks a callback URL at submit; a worker's task delivers it (visionq.worker)."""

from visionq.webhooks.address import check_callback_url, public_addresses
from visionq.webhooks.delivery import DeliveryFailed, deliver
from visionq.webhooks.signing import sign, verify

__all__ = ["DeliveryFailed", "check_callback_url", "deliver", "public_addresses", "sign", "verify"]
