"""Who may call /v1, and how often: API keys and per-client rate limits, checked before a body is read.

`AccessGuard` is ASGI middleware: a request without a valid key, or over its rate, is answered 401 or
429 from the headers alone, so an unauthenticated client cannot make the API read a 20 MB upload.
The client it let through (its key's name) is left in the request's state for the routes
(`deps.get_client`). Keys are kept only as sha256 digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPBearer
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from visionq.api.errors import error_responses, response_for
from visionq.config import Settings
from visionq.errors import ErrorCode, Throttled, Unauthorized, VisionqError

# Where the key a request carries is read from, the first one present.
KEY_HEADER: Final = "x-api-key"
_BEARER = re.compile(r"^Bearer\s+(\S+)\s*$", re.IGNORECASE)
KEY_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")

# The paths that need a key (this one and those under it); /healthz, /readyz, the docs and the schema
# stay open. /metrics too needs one, unless VISIONQ_METRICS_PUBLIC: it shows the queue's depth.
PROTECTED: Final = "/v1"
METRICS: Final = "/metrics"
_SUBMITS: Final = frozenset({("POST", "/v1/jobs"), ("POST", "/v1/detect")})


def hash_key(key: str) -> str:
    """The sha256 hex digest an API key is kept as."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits, URL-safe)."""
    return f"vq_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as the API knows it: a name (safe to log and store) and its sha256 digest."""

    name: str
    digest: bytes


class ApiKeys:
    """The keys that open /v1."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = tuple(keys)
        if not self._keys:
            raise ValueError("no API keys: leave both VISIONQ_API_KEYS and VISIONQ_API_KEYS_FILE unset")

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys | None:
        """The keys of VISIONQ_API_KEYS and VISIONQ_API_KEYS_FILE together; None when both are unset."""
        keys = [_plain(key) for key in settings.plain_api_keys]
        if settings.api_keys_file is not None:
            keys += read_key_file(settings.api_keys_file)
        return cls(keys) if keys or settings.api_keys_file is not None else None

    def identify(self, presented: str) -> str | None:
        """The name of the key `presented` is, or None; every key is compared, in constant time."""
        digest = hashlib.sha256(presented.encode()).digest()
        name = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest) and name is None:
                name = key.name
        return name


def _plain(key: str) -> ApiKey:
    digest = hash_key(key)
    return ApiKey(f"key-{digest[:8]}", bytes.fromhex(digest))


def read_key_file(path: Path) -> list[ApiKey]:
    """The keys of a file of `sha256-hex name` lines (blank lines and `#` comments skipped)."""
    keys: list[ApiKey] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        digest, _, name = line.partition(" ")
        name = name.strip() or f"key-{digest[:8]}"
        if not _DIGEST.match(digest) or not KEY_NAME.match(name):
            raise ValueError(
                f"{path}:{number}: expected `sha256-hex name` (64 lower-case hex digits, then a name of "
                "letters, digits, '.', '_' or '-')"
            )
        keys.append(ApiKey(name, bytes.fromhex(digest)))
    return keys


class RequestLimits:
    """Per-client rate limits: on every /v1 request, and on submits; counted in this process."""

    def __init__(self, *, every_request: str | None, submits: str | None) -> None:
        self._every: list[RateLimitItem] = parse_many(every_request) if every_request else []
        self._submits: list[RateLimitItem] = parse_many(submits) if submits else []
        # A sliding window counter: two counters per client and limit, however many requests.
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits | None:
        if settings.rate_limit is None and settings.submit_rate_limit is None:
            return None
        return cls(every_request=settings.rate_limit, submits=settings.submit_rate_limit)

    def check(self, client: str, *, submit: bool) -> None:
        """Count the request; raise Throttled, with the seconds until it may ask again, over a limit."""
        items = [*self._every, *self._submits] if submit else self._every
        for item in items:
            if not self._limiter.hit(item, client):
                reset = self._limiter.get_window_stats(item, client).reset_time
                raise Throttled(
                    f"Too many requests: the limit is {item}; try again later.",
                    retry_after_s=max(1, math.ceil(reset - time.time())),
                    code=ErrorCode.RATE_LIMITED,
                )


class AccessGuard:
    """ASGI middleware: the key check and the rate limits of every /v1 request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: ApiKeys | None,
        limits: RequestLimits | None,
        metrics_public: bool = False,
    ) -> None:
        self.app = app
        self.keys = keys
        self.limits = limits
        self.guarded = (PROTECTED,) if metrics_public else (PROTECTED, METRICS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not any(path == p or path.startswith(f"{p}/") for p in self.guarded):
            await self.app(scope, receive, send)
            return
        try:
            client = self._admit(scope)
        except VisionqError as exc:
            await response_for(exc)(scope, receive, send)
            return
        # What Starlette's `request.state` reads: the key's name, for the job row and the queue bound.
        scope.setdefault("state", {})["client"] = client if self.keys is not None else None
        await self.app(scope, receive, send)

    def _admit(self, scope: Scope) -> str:
        headers = Headers(scope=scope)
        if self.keys is not None:
            presented = _presented_key(headers)
            client = None if presented is None else self.keys.identify(presented)
            if client is None:
                why = "is not a valid key" if presented is not None else "is missing"
                raise Unauthorized(
                    "This API needs a key (Authorization: Bearer KEY, or X-API-Key: KEY); "
                    f"the request's {why}."
                )
        else:
            address = scope.get("client")
            client = f"address {address[0]}" if address else "address unknown"
        if self.limits is not None:
            self.limits.check(client, submit=(scope["method"], scope["path"].rstrip("/")) in _SUBMITS)
        return client


def _presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization")
    if authorization is not None:
        match = _BEARER.match(authorization)
        return match.group(1) if match else authorization  # not a Bearer token: no key of ours
    return headers.get(KEY_HEADER)


# For the OpenAPI schema only (auto_error=False: they never refuse anything; AccessGuard does).
_BEARER_SCHEME = HTTPBearer(auto_error=False, description="An API key as a Bearer token.")
_HEADER_SCHEME = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")


def documented_access(keys: ApiKeys | None, limits: RequestLimits | None) -> dict[str, Any]:
    """`include_router` arguments that put the key schemes and the 401/429 answers in the schema."""
    statuses = ([401] if keys is not None else []) + ([429] if keys is not None or limits is not None else [])
    arguments: dict[str, Any] = {"responses": error_responses(*statuses)} if statuses else {}
    if keys is not None:
        arguments["dependencies"] = [Security(_BEARER_SCHEME), Security(_HEADER_SCHEME)]
    return arguments
