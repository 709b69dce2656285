"""A cap on request bodies, enforced while they stream in, so no upload is read past the limit."""

from __future__ import annotations

from typing import Final

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Room for what a multipart upload carries besides the image: boundaries, part headers and the small
# form fields (conf, iou, classes, model, ...). The image's own size is checked exactly after parsing.
FORM_OVERHEAD_BYTES: Final = 64 * 1024


class BodyLimit:
    """ASGI middleware refusing, with 413, a body larger than `max_bytes`.

    A Content-Length over the limit is refused before a byte is read; a chunked body is counted as it
    arrives and refused the moment it passes the limit. The 413 is raised from `receive`, inside the
    route, so the API's own exception handler shapes the response.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, detail: str = "") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = detail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > self.max_bytes:
                raise self._too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> HTTPException:
        message = f"The request body is larger than the limit of {self.max_bytes:,} bytes."
        return HTTPException(413, f"{message} {self.detail}".strip())


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
