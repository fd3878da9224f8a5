"""A webhook receiver on 127.0.0.1 for tests of notifications: every POST is kept (as the test's
`keep` turns it into a value) and answered with the statuses queued in `.statuses`, then 204."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def webhook_receiver(keep: Callable[[dict[str, str], bytes], Any]) -> Iterator[ThreadingHTTPServer]:
    """The running server, with `.url` (the hook's address), `.posts` (what `keep(headers, body)`
    returned for each POST, in order) and `.statuses` (statuses to answer first)."""
    posts: list[Any] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(keep(dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(statuses.pop(0) if statuses else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.posts, server.statuses = posts, statuses  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
