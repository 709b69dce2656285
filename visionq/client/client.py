"""`VisionqClient`: visionq's HTTP API for a program — submit an image, read a job, follow it to its end.

Synchronous over one `httpx.Client`, which is safe to share between threads: `visionq submit` runs
its uploads in a few threads of its own, and a script can use the client as it is. Answers that are
not what was asked raise `ApiError` with the API's error code, or a code of the client's own for what
the API never says (`connection_error`, `bad_response`, `wait_timeout`).
"""

from __future__ import annotations

import email.utils
import json
import mimetypes
import time
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import httpx

from visionq.client import sse

JobJson = dict[str, Any]  # a job as the API shows it (visionq.api.schemas.JobOut)

TERMINAL: Final = frozenset({"succeeded", "failed", "cancelled"})

CONNECTION_ERROR: Final = "connection_error"  # no answer: refused, reset, timed out
BAD_RESPONSE: Final = "bad_response"  # an answer that is not the API's (a proxy's page, cut-off JSON)
WAIT_TIMEOUT: Final = "wait_timeout"  # the job did not end within the time the caller gave it

# 429 (a rate or queue limit) and 503 (a server behind the API is down, the queue is full) say "later",
# with Retry-After; every other error would be the same answer again.
_RETRY_STATUSES: Final = frozenset({429, 503})
_MAX_RETRY_AFTER_S: Final = 60.0  # a Retry-After of an hour is a reason to give up, not to hang
_DEFAULT_RETRY_AFTER_S: Final = 1.0
# From a broken stream to the next connection: soon (a blip), and less often while it keeps breaking.
_RECONNECT_S: Final = (0.2, 5.0)
# Uploads send up to 20 MB; a stream is silent between keep-alives. Connecting is quick or hopeless.
_TIMEOUT_S: Final = 60.0
_CONNECT_TIMEOUT_S: Final = 10.0


class ApiError(Exception):
    """A request that did not get what it asked for; `code` is the API's error code or one of ours."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submit's answer: the job, and whether an earlier request with the same key made it."""

    job: JobJson
    replayed: bool


class VisionqClient:
    """visionq's API at `base_url`, with `api_key` sent as a bearer token when given.

    `attempts` bounds the tries of a request the server answers 429 or 503 (each after its
    Retry-After), and of one that gets no answer at all when sending it again is harmless: a GET,
    or an upload with an Idempotency-Key. `sleep`, `clock` and `transport` are for tests: a network
    that breaks where the test says.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        attempts: int = 5,
        connections: int = 10,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            transport=transport,
        )
        self._attempts = max(1, attempts)
        self._sleep = sleep
        self._clock = clock
        self.retries = 0  # requests sent again, in all: what a caller may report

    def __enter__(self) -> VisionqClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def check(self) -> None:
        """Ask the API one cheap question that needs the key (GET /v1/models), once: a server that is
        down, or a key it refuses, should be one clear error before any upload."""
        self._json(self._send(self._http.build_request("GET", "/v1/models"), attempts=1))

    def submit(
        self,
        path: Path,
        *,
        model: str | None = None,
        conf: float | None = None,
        idempotency_key: str | None = None,
    ) -> Submitted:
        """Upload the image at `path` as a new job (POST /v1/jobs); the server's defaults for what is None."""
        data = {k: str(v) for k, v in (("model", model), ("conf", conf)) if v is not None}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as image:

            def build() -> httpx.Request:
                image.seek(0)  # a retry sends the file from its start
                files = {"image": (path.name, image, content_type)}
                return self._http.build_request("POST", "/v1/jobs", data=data, files=files, headers=headers)

            response = self._send(build, resend=idempotency_key is not None)
        job = self._json(response, expected=202)
        return Submitted(job, replayed=response.headers.get("Idempotent-Replayed") == "true")

    def get(self, job_id: str) -> JobJson:
        """The job as it is now (GET /v1/jobs/{id})."""
        return self._json(self._send(self._http.build_request("GET", f"/v1/jobs/{job_id}")))

    def events(
        self, job_id: str, *, read_timeout_s: float | None = None
    ) -> Generator[JobJson | None, None, None]:
        """The job at each change of status, the current state first, from GET /v1/jobs/{id}/events;
        None for each keep-alive. Ends when the server closes the stream (after the terminal state);
        raises ApiError when the stream cannot be had or breaks."""
        read_s = _TIMEOUT_S if read_timeout_s is None else read_timeout_s
        timeout = httpx.Timeout(_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S, read=read_s)
        request = self._http.build_request(
            "GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}, timeout=timeout
        )
        # One try: `wait` answers a refused stream with a GET, which has the retries.
        response = self._send(request, stream=True, attempts=1)
        try:
            if response.status_code != 200:
                response.read()
                raise _error(response)
            for event in sse.parse(response.iter_lines()):
                if event is None:
                    yield None
                elif event.event == "job":
                    yield _loads(event.data)
                elif event.event == "error":  # the job was deleted while it was followed
                    raise _error_of(_loads(event.data), None)  # no HTTP status: the stream had 200
        except httpx.HTTPError as exc:
            raise ApiError(CONNECTION_ERROR, f"the event stream of job {job_id} broke: {exc!r}") from exc
        finally:
            response.close()

    def wait(self, job_id: str, *, timeout_s: float) -> JobJson:
        """The job once it has ended, followed on its event stream; a stream that breaks (or is not
        there) is replaced by one GET, and then by a new stream. Raises ApiError `wait_timeout` when
        the job has not ended within `timeout_s`."""
        deadline = self._clock() + timeout_s
        pause = _RECONNECT_S[0]
        while True:
            try:
                # Keep-alives come well inside the read timeout; a silence past it is a dead connection.
                read_s = min(_TIMEOUT_S, max(1.0, deadline - self._clock()) + 1)
                with closing(self.events(job_id, read_timeout_s=read_s)) as stream:  # closed on return
                    for job in stream:
                        if job is not None:
                            if job.get("status") in TERMINAL:
                                return job
                            pause = _RECONNECT_S[0]  # the stream works: a break now would be a blip
                        if self._clock() > deadline:
                            break
            except ApiError:
                pass  # the GET below tells a job that is gone (or a key refused) from a broken stream
            job = self.get(job_id)
            if job.get("status") in TERMINAL:
                return job
            if self._clock() + pause > deadline:
                raise ApiError(
                    WAIT_TIMEOUT, f"job {job_id} is still {job.get('status')} after {timeout_s:g} s"
                )
            self._sleep(pause)
            pause = min(pause * 2, _RECONNECT_S[1])

    def _send(
        self,
        build: httpx.Request | Callable[[], httpx.Request],
        *,
        resend: bool = True,
        stream: bool = False,
        attempts: int | None = None,
    ) -> httpx.Response:
        """The response to the request, after the retries its answers (or their absence) allow."""
        tries = self._attempts if attempts is None else attempts
        for attempt in range(1, tries + 1):
            request = build() if callable(build) else build
            try:
                response = self._http.send(request, stream=stream)
            except httpx.RequestError as exc:  # no answer, or one that could not be read
                if not resend or attempt == tries:
                    raise ApiError(CONNECTION_ERROR, f"{request.url}: {exc!r}") from exc
                self._retry(_backoff_s(attempt))
                continue
            if response.status_code not in _RETRY_STATUSES or attempt == tries:
                return response
            response.close()
            self._retry(_retry_after_s(response))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _retry(self, delay_s: float) -> None:
        self.retries += 1
        self._sleep(delay_s)

    @staticmethod
    def _json(response: httpx.Response, *, expected: int = 200) -> JobJson:
        if response.status_code != expected:
            raise _error(response)
        return _loads(response.text)


def _loads(text: str) -> JobJson:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApiError(BAD_RESPONSE, f"not JSON: {text[:200]!r}") from exc
    if not isinstance(value, dict):
        raise ApiError(BAD_RESPONSE, f"not a JSON object: {text[:200]!r}")
    return value


def _error(response: httpx.Response) -> ApiError:
    """The API's `{"error": {"code", "message"}}`, or what the answer was when it is not that."""
    try:
        return _error_of(response.json(), response.status_code)
    except ValueError:
        text = response.text[:200]
        return ApiError(BAD_RESPONSE, f"HTTP {response.status_code}: {text!r}", status=response.status_code)


def _error_of(body: object, status: int | None) -> ApiError:
    """The ApiError of an `{"error": {"code", "message"}}` body; ValueError when it is not one."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or "code" not in error or "message" not in error:
        raise ValueError(f"not an error body: {body!r:.200}")
    return ApiError(str(error["code"]), str(error["message"]), status=status)


def _retry_after_s(response: httpx.Response) -> float:
    """Retry-After in seconds (a number, or an HTTP date), bounded; a missing one waits a second."""
    value = str(response.headers.get("Retry-After", "")).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = float(email.utils.parsedate_to_datetime(value).timestamp()) - time.time()
        except (TypeError, ValueError):
            seconds = _DEFAULT_RETRY_AFTER_S
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def _backoff_s(attempt: int) -> float:
    return float(min(0.5 * 2.0 ** (attempt - 1), 8.0))
