"""Where a callback URL may point: a public address, unless the operator allows private ones.

Without this check, anyone who may submit a job could make visionq POST to the network it runs in:
the database's admin port, a cloud's metadata service (169.254.169.254), a router. The check is on the
addresses the name resolves to, not on the name (a public-looking name may resolve to 127.0.0.1), and
every one of them must be public. The delivery connects to an address that passed the check, not to a
second resolution of the name, so a DNS answer that changes in between (rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

from visionq import constants
from visionq.errors import ErrorCode, InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = {"http": 80, "https": 443}


def check_callback_url(url: str, *, allow_private: bool) -> SplitResult:
    """The URL, split, when it may be called back (http or https to a public address); else
    InvalidRequest with the code `invalid_callback_url` saying why."""
    return resolve_callback_url(url, allow_private=allow_private)[0]


def resolve_callback_url(url: str, *, allow_private: bool) -> tuple[SplitResult, int, list[IPAddress]]:
    """The URL split, its port, and the addresses its host resolves to, when it may be called back;
    InvalidRequest as `check_callback_url` otherwise. One resolution: a delivery connects to these."""
    parts = _parse(url)
    port = parts.port or _SCHEMES[parts.scheme]
    return parts, port, public_addresses(parts.hostname or "", port, allow_private=allow_private)


def public_addresses(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """The addresses `host` resolves to, when all may be called (see the module); InvalidRequest
    otherwise, also when the name does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _refused(f"its host {host!r} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(_address(str(info[4][0])) for info in infos))
    if not allow_private:
        for address in addresses:
            if not _public(address):
                raise _refused(
                    f"its host {host!r} is {address}, not a public address (the server's "
                    "VISIONQ_WEBHOOK_ALLOW_PRIVATE lets callbacks reach private networks)"
                )
    return addresses


def _parse(url: str) -> SplitResult:
    if len(url) > constants.MAX_CALLBACK_URL_LENGTH:
        raise _refused(f"it is longer than {constants.MAX_CALLBACK_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is no number or out of range
    except ValueError as exc:
        raise _refused(f"it is no URL ({exc})") from None
    if parts.scheme not in _SCHEMES:
        raise _refused("it is not an http or https URL")
    if not parts.hostname:
        raise _refused("it names no host")
    if parts.username is not None or parts.password is not None:
        raise _refused("it carries credentials; put a token in the path or query instead")
    if parts.fragment:
        raise _refused("it has a fragment (#...), which is never sent")
    return parts


def _address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) is no address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def _public(address: IPAddress) -> bool:
    # `is_global` is False for loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local
    # (169.254/16, fe80::/10), shared (100.64/10), documentation, benchmarking and reserved ranges;
    # multicast is refused on its own (some multicast ranges count as global).
    return address.is_global and not address.is_multicast


def _refused(why: str) -> InvalidRequest:
    return InvalidRequest(f"callback_url refused: {why}", code=ErrorCode.INVALID_CALLBACK_URL)
