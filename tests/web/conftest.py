"""The page's tests drive Debian's Chromium with Playwright against visionq running in subprocesses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.e2e.stack import Service, running_service
from tests.web.browser import CHROMIUM_ARGS, ensure_chromium
from visionq.models.cache import ModelCache

# A desktop window, the size of the README's screenshot.
DESKTOP = {"width": 1280, "height": 900}
# Small enough that a test can make a file over it in a blink; bus.jpg (487 KB) stays under it.
MAX_IMAGE_BYTES = 1_000_000
# Long enough for any page of characters the service accepts (VISIONQ_API_KEYS wants 20 or more).
API_KEY = "vq_web-test-key-0123456789abcdef"

PageFactory = Callable[..., Page]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = ensure_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=list(CHROMIUM_ARGS))
        yield launched
        launched.close()


# One service for a module's tests: each test makes its own jobs and looks only at those, and starting
# the API and a worker (the model loaded) is most of a test's time. Embedded only: the page sees the
# same HTTP API on every backend, and tests/e2e already runs the others.
@pytest.fixture(scope="module", params=["embedded"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_cache: ModelCache
) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("service")
    with running_service(request, folder, model_cache, max_image_bytes=str(MAX_IMAGE_BYTES)) as running:
        yield running


@pytest.fixture(scope="module", params=["embedded"])
def keyed_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_cache: ModelCache
) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("keyed-service")
    with running_service(request, folder, model_cache, api_keys=API_KEY) as running:
        yield running


def _is_refused_request(message: ConsoleMessage) -> bool:
    # Chromium logs every 4xx a fetch() gets ("Failed to load resource: ... 401"); the page expects
    # those (a key asked for, a file refused) and shows them itself.
    return message.text.startswith("Failed to load resource: the server responded with a status of 4")


@pytest.fixture
def new_page(browser: Browser) -> Iterator[PageFactory]:
    """Returns open(base_url, **context options): a page in a fresh browser context (its own
    sessionStorage); after the test, every page must have logged no script error."""
    errors: list[str] = []
    contexts = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not _is_refused_request(message):
            errors.append(f"console: {message.text}")

    def open_page(base_url: str, **options: Any) -> Page:
        options.setdefault("viewport", DESKTOP)
        context = browser.new_context(base_url=base_url, accept_downloads=True, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
        page.on("console", console)
        page.goto("/")
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == []
