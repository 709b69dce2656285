"""The web page at `/`: plain HTML, CSS and JavaScript modules from `visionq/api/static`, no build step.

The page calls /v1 like any other client, so it needs nothing of the API beyond what is documented;
`/` and `/static` stay outside `access.PROTECTED`, because the page must load to ask for a key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

STATIC: Final = Path(__file__).resolve().parent.parent / "static"

# The page's scripts come from here and talk to this origin only; images are blob: URLs of fetched
# bytes. Nothing inline, so an injected tag could not run.
_POLICY: Final = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
# Revalidate every time (an ETag round trip): after an upgrade the browser must not run old scripts.
_CACHE: Final = "no-cache"

router = APIRouter(include_in_schema=False)


class _Revalidated(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = _CACHE
        return response


@router.get("/")
def index() -> FileResponse:
    """The page."""
    headers = {"Cache-Control": _CACHE, "Content-Security-Policy": _POLICY}
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)


router.mount("/static", _Revalidated(directory=STATIC), name="static")
