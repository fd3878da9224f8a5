"""Security headers on every response of the receiver, whatever route or error produced it.

Why middleware and not per route: a header that a 404, a 422 or /docs forgets is a header an
attacker gets to choose. What each one stops:

- `X-Content-Type-Options: nosniff`: a partner's file is never sniffed into HTML or script;
- `Content-Security-Policy: frame-ancestors 'none'` (added to a route's own policy) and
  `X-Frame-Options: DENY`: no page of the receiver can be framed (clickjacking the admin page);
- `Referrer-Policy: no-referrer`: release ids in URLs do not leak to other sites;
- `Strict-Transport-Security`: only when the request came over TLS (the ASGI scheme, or
  `X-Forwarded-Proto: https` from the TLS proxy in deploy/central/); browsers ignore it over HTTP.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = "max-age=31536000; includeSubDomains"
FRAME_ANCESTORS = "frame-ancestors 'none'"


def came_over_tls(scope: Scope) -> bool:
    if scope.get("scheme") in ("https", "wss"):
        return True
    for key, value in scope.get("headers") or []:
        if key == b"x-forwarded-proto":
            return value.split(b",")[0].strip().lower() == b"https"
    return False


class SecurityHeaders:
    """ASGI middleware adding the headers of the module docstring to every HTTP response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = came_over_tls(scope)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                policy = headers.get("Content-Security-Policy")
                if not policy:
                    headers["Content-Security-Policy"] = FRAME_ANCESTORS
                elif "frame-ancestors" not in policy:
                    headers["Content-Security-Policy"] = f"{policy}; {FRAME_ANCESTORS}"
                if tls:
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        await self.app(scope, receive, with_headers)


__all__ = ["SecurityHeaders", "came_over_tls"]
