"""One HTTP client for the form-server sources: retries with back-off, Retry-After, clear errors.

Servers fail in a few ordinary ways: 429 with `Retry-After`, a 5xx, a dropped connection, a body
cut short, a proxy's HTML error page where JSON was expected, a session that expired mid-run. This
client retries what is transient, re-authenticates once on a 401 when the caller can, and turns the
rest into a `SourceError` that names the source and the resource, never a credential: the request's
headers and query are never part of a message (a Kobo or Central token could sit in either).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from connector.retry import backoff_delay, parse_retry_after
from connector.sources.base import SourceAuthError, SourceError, SourceStats

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class SourceHttpError(SourceError):
    """The server refused a request with a status no retry can change (404, 400, 501, ...).

    `status` lets a source degrade on a known answer (an older ODK Central's 501 for a filter it
    does not support) instead of failing the run.
    """

    def __init__(self, where: str, message: str, *, status: int):
        super().__init__(where, message)
        self.status = status


class HttpClient:
    """A requests session bound to one server, counting every call in `stats.requests`.

    `auth_headers()` is called for each request (so a refreshed token is used at once);
    `reauthenticate()` is called once after a 401 and returns True if a retry may succeed.
    """

    def __init__(
        self,
        where: str,
        base_url: str,
        *,
        stats: SourceStats,
        auth_headers: Callable[[], dict[str, str]] | None = None,
        reauthenticate: Callable[[], bool] | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        verify: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ):
        self.where = where
        self.base_url = base_url.rstrip("/") + "/"
        self.stats = stats
        self.auth_headers = auth_headers or (lambda: {})
        self.reauthenticate = reauthenticate
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.verify = verify
        self.sleep = sleep
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", "htcds-connector")

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return urljoin(self.base_url, path_or_url.lstrip("/"))

    def get_json(self, path_or_url: str, params: dict[str, Any] | None = None, *, what: str, auth: bool = True) -> Any:
        return self.request_json("GET", path_or_url, params=params, what=what, auth=auth)

    def get_text(self, path_or_url: str, params: dict[str, Any] | None = None, *, what: str) -> str:
        return self.request("GET", path_or_url, params=params, what=what).text

    def request_json(self, method: str, path_or_url: str, *, what: str, params: dict[str, Any] | None = None, json_body: Any = None, auth: bool = True) -> Any:
        """Send and decode JSON; a body that is not JSON (HTML page, cut short) is retried, then reported."""
        attempt = 0
        while True:
            response = self.request(method, path_or_url, params=params, json_body=json_body, what=what, auth=auth)
            try:
                return response.json()
            except ValueError:
                attempt += 1
                problem = describe_body(response)
                if attempt > self.max_retries:
                    raise SourceError(self.where, f"{what}: the server answered {problem} instead of JSON", transient=True) from None
                log.warning("%s: %s: %s instead of JSON; retrying", self.where, what, problem)
                self._wait(attempt, None)

    def request(self, method: str, path_or_url: str, *, what: str, params: dict[str, Any] | None = None, json_body: Any = None, auth: bool = True) -> requests.Response:
        url = self.url(path_or_url)
        attempt = 0
        reauthenticated = False
        while True:
            headers = self.auth_headers() if auth else {}
            self.stats.requests += 1
            try:
                response = self.session.request(method, url, params=params, json=json_body, headers=headers, timeout=self.timeout, verify=self.verify)
                # Read the body now so that a connection cut mid-body counts as a transient failure here.
                _ = response.content
            except requests.exceptions.SSLError as exc:
                raise SourceError(self.where, f"{what}: TLS error talking to {_host(url)} ({type(exc).__name__})") from None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                attempt += 1
                if attempt > self.max_retries:
                    raise SourceError(self.where, f"{what}: {_host(url)} unreachable after {attempt} attempts ({type(exc).__name__})", transient=True) from None
                log.warning("%s: %s: %s; retry %d", self.where, what, type(exc).__name__, attempt)
                self._wait(attempt, None)
                continue
            status = response.status_code
            if status == 401:
                if auth and self.reauthenticate is not None and not reauthenticated and self.reauthenticate():
                    reauthenticated = True
                    continue
                raise SourceAuthError(self.where, f"{what}: credentials refused (HTTP 401: {describe_body(response)}); check the token or password reference")
            if status == 403:
                raise SourceAuthError(self.where, f"{what}: access denied (HTTP 403: {describe_body(response)}); the account needs read access to this project/form")
            if status in RETRY_STATUSES:
                attempt += 1
                if attempt > self.max_retries:
                    raise SourceError(self.where, f"{what}: HTTP {status} after {attempt} attempts ({describe_body(response)})", transient=True)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                log.warning("%s: %s: HTTP %d; retry %d%s", self.where, what, status, attempt, f" after {retry_after:.0f}s" if retry_after else "")
                self._wait(attempt, retry_after)
                continue
            if status >= 400:
                raise SourceHttpError(self.where, f"{what}: HTTP {status} ({describe_body(response)})", status=status)
            return response

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        self.sleep(backoff_delay(attempt, base=self.backoff, cap=self.max_wait, retry_after=retry_after))

    def close(self) -> None:
        self.session.close()


def describe_body(response: requests.Response) -> str:
    """A short, safe description of an error body: an HTML page by its title, JSON by its message."""
    text = response.text or ""
    ctype = response.headers.get("Content-Type", "")
    if "html" in ctype or text.lstrip().lower().startswith(("<!doctype html", "<html")):
        match = _TITLE.search(text)
        title = " ".join(match.group(1).split())[:80] if match else "untitled"
        return f"an HTML page titled {title!r}"
    if not text.strip():
        return "an empty body"
    try:
        body = json.loads(text)
    except ValueError:
        return f"a body that is not JSON ({len(text)} bytes{', cut short' if _looks_cut(text) else ''})"
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if isinstance(body.get(key), str):
                return body[key][:200]
    return f"{len(text)} bytes of JSON"


def _looks_cut(text: str) -> bool:
    stripped = text.rstrip()
    return stripped.startswith(("{", "[")) and not stripped.endswith(("}", "]"))


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
