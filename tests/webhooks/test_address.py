"""Where a callback URL may point: the resolved addresses are checked, every one of them public."""

from __future__ import annotations

import pytest

from visionq.errors import ErrorCode, InvalidRequest
from visionq.webhooks import check_callback_url, public_addresses


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",  # a name: what it resolves to is what counts
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://224.0.0.1/",
        "http://2130706433/",  # 127.0.0.1 written as one number, which the resolver accepts
    ],
)
def test_a_callback_to_a_non_public_address_is_refused(url: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_callback_url(url, allow_private=False)
    assert refused.value.code is ErrorCode.INVALID_CALLBACK_URL
    assert "not a public address" in refused.value.message


def test_a_public_address_passes() -> None:
    assert check_callback_url("https://8.8.8.8:8443/hook?token=x", allow_private=False).port == 8443
    assert [str(a) for a in public_addresses("1.1.1.1", 443, allow_private=False)] == ["1.1.1.1"]


def test_private_addresses_pass_when_the_operator_allows_them() -> None:
    assert check_callback_url("http://localhost:9/hook", allow_private=True).hostname == "localhost"
    assert {str(a) for a in public_addresses("127.0.0.1", 80, allow_private=True)} == {"127.0.0.1"}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://8.8.8.8/", "not an http or https URL"),
        ("file:///etc/passwd", "not an http or https URL"),
        ("http:///nohost", "names no host"),
        ("http://user:secret@8.8.8.8/", "carries credentials"),
        ("http://8.8.8.8/#part", "fragment"),
        ("http://8.8.8.8:99999/", "no URL"),
        ("http://8.8.8.8/" + "a" * 2100, "longer than 2048"),
        ("http://no-such-host.invalid/", "does not resolve"),
    ],
)
def test_a_url_that_is_no_callback_is_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_callback_url(url, allow_private=True)
    assert why in refused.value.message
