"""What the ODK Central and Kobo sandboxes share: a threaded HTTP server on 127.0.0.1, injectable
faults, request counting and a handle to stop it.

Faults are how tests prove a source survives a real server's bad days: `handle.faults.add(429,
retry_after=1)` makes the next matching request fail once with that status; `truncate` cuts the
body short; `html` answers with a proxy's HTML error page. Faults are consumed in order.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

HTML_ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


@dataclass
class Fault:
    """One injected failure: `status` (401, 429, 500, ...) or `kind` "truncate" / "html"; `path` a substring to match."""

    status: int = 500
    kind: str = "status"  # "status" | "truncate" | "html"
    retry_after: float | None = None
    path: str = ""
    times: int = 1


class Faults:
    """A thread-safe queue of faults; `take(path)` returns the next fault that matches the request path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Fault] = []

    def add(self, status: int = 500, *, kind: str = "status", retry_after: float | None = None, path: str = "", times: int = 1) -> None:
        with self._lock:
            self._items.append(Fault(status=status, kind=kind, retry_after=retry_after, path=path, times=times))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(f.times for f in self._items)

    def take(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._items:
                if fault.path in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._items.remove(fault)
                    return fault
        return None


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] | None = None


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None, content_type: str = "application/json; charset=utf-8") -> Reply:
    return Reply(status=status, body=json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), content_type=content_type, headers=headers)


class Request:
    """What a route sees: method, path, query (first value per key), headers, JSON body."""

    def __init__(self, method: str, raw_path: str, headers: Any, body: bytes, host: str):
        parts = urlsplit(raw_path)
        self.method = method
        self.path = parts.path
        self.raw_query = parts.query
        self.query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.headers = headers
        self.body = body
        self.host = host

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


class FormServerHandle:
    """A running sandbox: `url`, `stop()`, `faults`, request counts by route, `set_cases()`."""

    def __init__(self, app: "SandboxApp", server: ThreadingHTTPServer, thread: threading.Thread):
        self.app = app
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.faults = app.faults

    @property
    def requests(self) -> Counter:
        """Requests served so far, by route name (and "total")."""
        return self.app.counts

    def set_cases(self, cases: Any) -> None:
        self.app.set_cases(cases)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FormServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SandboxApp:
    """Base of a sandbox application: subclasses implement `route(request) -> (name, Reply)`."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.counts: Counter = Counter()
        self.lock = threading.RLock()

    def set_cases(self, cases: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def route(self, request: Request) -> tuple[str, Reply]:  # pragma: no cover - overridden
        raise NotImplementedError

    def fault_reply(self, fault: Fault) -> Reply | None:
        """A server-specific body for an injected status (subclasses shape 401s as their server does)."""
        return None

    def handle(self, request: Request) -> Reply:
        self.counts["total"] += 1
        fault = self.faults.take(request.path + ("?" + request.raw_query if request.raw_query else ""))
        if fault is not None:
            self.counts["faults"] += 1
            if fault.kind == "html":
                return Reply(status=fault.status if fault.status != 500 else 502, body=HTML_ERROR_PAGE.encode(), content_type="text/html")
            if fault.kind == "status":
                reply = self.fault_reply(fault) or json_reply({"message": f"injected fault {fault.status}"}, status=fault.status)
                if fault.retry_after is not None:
                    reply.headers = {**(reply.headers or {}), "Retry-After": str(int(fault.retry_after))}
                return reply
            name, reply = self.route(request)
            self.counts[name] += 1
            reply.headers = {**(reply.headers or {}), "X-Sandbox-Truncate": "1"}
            return reply
        name, reply = self.route(request)
        self.counts[name] += 1
        return reply


def serve(app: SandboxApp, port: int = 0) -> FormServerHandle:
    """Start `app` on 127.0.0.1:`port` (0: a free port) in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid the 40 ms delayed-ACK stall

        def _do(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            request = Request(self.command, self.path, self.headers, body, host)
            try:
                reply = app.handle(request)
            except Exception as exc:  # a sandbox bug must show as a 500, not a hung client
                reply = json_reply({"message": f"sandbox error: {type(exc).__name__}: {exc}"}, status=500)
            extra = dict(reply.headers or {})
            truncate = extra.pop("X-Sandbox-Truncate", None)
            payload = reply.body
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in extra.items():
                self.send_header(key, value)
            if truncate:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload[: max(1, len(payload) // 2)] if truncate else payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _do

        def log_message(self, format: str, *args: object) -> None:  # quiet: tests read counts instead
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{type(app).__name__}-sandbox", daemon=True)
    thread.start()
    return FormServerHandle(app, server, thread)


Route = Callable[[Request], tuple[str, Reply]]
