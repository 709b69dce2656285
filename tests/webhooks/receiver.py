"""A webhook receiver for the tests: a real HTTP server on the loopback that records every request and
answers with the statuses it is given, one per request (the last one again once they run out)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Where webhooks land; `statuses` are answered in turn."""

    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    location: str | None = None
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> int:
        with self._lock:
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def record(self, item: Received) -> None:
        with self._lock:
            self.received.append(item)

    def count(self) -> int:
        with self._lock:
            return len(self.received)


@contextmanager
def receiving(receiver: Receiver, port: int = 0) -> Iterator[str]:
    """Serve `receiver` on 127.0.0.1 (`port`, or a free one); yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.record(Received(self.path, dict(self.headers.items()), body))
            time.sleep(receiver.delay_s)
            status = receiver.answer()
            self.send_response(status)
            if receiver.location is not None:
                self.send_header("Location", receiver.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
