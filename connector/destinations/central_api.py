"""Central API destination: upload a bundle over HTTPS to the central receiver (`central serve`).

Protocol (the receiver's OpenAPI at `/openapi.json` is the reference):

    GET  {url}/releases/{release_id}     200: already received (publish is a no-op); 404: not yet
    POST {url}/releases                  multipart/form-data, one part `files` per bundle file
         Authorization: Bearer <partner token>
         Idempotency-Key: <release id>   201: stored; 200: the same release was already stored

Why multipart rather than a tar or zip: every HTTP stack and proxy speaks it, OpenAPI describes it
(so the receiver's API can be fuzzed), and the receiver reads known file names without unpacking
an archive (no archive paths, no zip bombs).

Why it is safe to retry: the release id is a hash of the content and is sent as the idempotency
key; the receiver stores a release id once (a unique key), so an upload retried after a dropped
connection never makes a second release. Failures that may pass (connection errors, timeouts,
408, 429, 5xx) are retried with exponential back-off and full jitter, honouring `Retry-After`;
other 4xx are the receiver refusing the release and are reported at once with its reasons.
The token is read from its secret reference per publish and never enters a message or log line.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import requests

from connector.destinations.base import Destination, PublishError, PublishResult
from connector.destinations.s3 import content_type
from connector.records import Problem
from connector.release import MANIFEST_FILE, Bundle
from connector.retry import backoff_delay, parse_retry_after
from connector.secrets import Secret, SecretMissing

if TYPE_CHECKING:
    from connector.config import CentralApiDestinationConfig

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_DELAY = 120.0


class CentralApiDestination(Destination):
    def __init__(
        self,
        url: str,
        token: Secret,
        *,
        partner: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = url.rstrip("/")
        self.token = token
        self.partner = partner
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = session or requests.Session()
        self.sleep = sleep
        self.attempts = 0  # HTTP attempts made by the last publish (for reports and tests)

    @classmethod
    def from_config(cls, config: "CentralApiDestinationConfig", *, partner: str | None = None) -> "CentralApiDestination":
        return cls(config.url, config.token, partner=partner, timeout=config.timeout, retries=config.retries)

    def describe(self) -> str:
        return f"central_api {self.url}"

    # -- HTTP ----------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.get()}", "Accept": "application/json"}

    def delay(self, attempt: int, response: requests.Response | None) -> float:
        """Seconds before retry number `attempt` (1-based): Retry-After if the server gave one, else
        full jitter over an exponential window, so many partners retrying do not stampede."""
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        return backoff_delay(attempt, base=self.backoff, cap=MAX_DELAY, retry_after=retry_after)

    def _request(self, method: str, path: str, *, extra_headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        """One logical request with retries; returns the final response (any status) or raises PublishError.
        A failed POST may have delivered its body (a timeout after the receiver read it): `sent`."""
        last_error = ""
        for attempt in range(self.retries + 1):
            response: requests.Response | None = None
            self.attempts += 1
            try:
                headers = {**self._headers(), **(extra_headers or {})}
                response = self.session.request(method, self.url + path, headers=headers, timeout=self.timeout, **kwargs)
            except SecretMissing as exc:
                raise PublishError(f"cannot publish to {self.url}: token: {exc}", sent=attempt > 0 and method == "POST") from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_error = f"{type(exc).__name__} talking to {self.url}"
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                last_error = f"HTTP {response.status_code} from {self.url}{path}"
            if attempt < self.retries:
                self.sleep(self.delay(attempt + 1, response))
        raise PublishError(f"{method} {self.url}{path} failed after {self.retries + 1} attempts: {last_error}", sent=method == "POST")

    # -- Destination ---------------------------------------------------------------------------

    def check(self) -> list[Problem]:
        try:
            response = self.session.get(self.url + "/whoami", headers=self._headers(), timeout=min(self.timeout, 30))
        except SecretMissing as exc:
            return [Problem("destination.token", str(exc), hint="set the variable or file that token_env/token_file names")]
        except requests.RequestException as exc:
            return [Problem("destination.url", f"cannot reach {self.url} ({type(exc).__name__})", hint="check the URL, DNS, TLS and firewall")]
        if response.status_code == 401:
            return [Problem("destination.token", f"{self.url} does not accept the token", hint="ask the central team for a new token (`central add-partner`)")]
        if response.status_code != 200:
            return [Problem("destination.url", f"{self.url}/whoami answered HTTP {response.status_code}", hint="is this the central receiver's base URL?")]
        partner = _json(response).get("partner")
        if self.partner and partner != self.partner:
            return [Problem("partner.id", f"the token belongs to partner {partner!r}, not {self.partner!r}", hint="use this partner's own token or fix partner.id")]
        return []

    def publish(self, bundle: Bundle) -> PublishResult:
        self.attempts = 0
        location = f"{self.url}/releases/{bundle.release_id}"
        existing = self._request("GET", f"/releases/{bundle.release_id}")
        if existing.status_code == 200:
            return PublishResult(bundle.release_id, location, published=False)
        if existing.status_code != 404:
            raise PublishError(_refusal("checking", bundle, existing), sent=False)
        ordered = [name for name in bundle.files if name != MANIFEST_FILE] + [MANIFEST_FILE]
        files = [("files", (name, bundle.files[name], content_type(name))) for name in ordered]
        response = self._request("POST", "/releases", files=files, extra_headers={"Idempotency-Key": bundle.release_id})
        if response.status_code in (200, 201):
            return PublishResult(bundle.release_id, location, published=True)
        raise PublishError(_refusal("uploading", bundle, response))  # the receiver read the files: sent


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _refusal(doing: str, bundle: Bundle, response: requests.Response) -> str:
    """The receiver's reasons, one per line, so the partner's IT person sees what to fix."""
    detail = _json(response).get("detail")
    reasons: list[str] = []
    if isinstance(detail, dict):
        reasons = [str(r) for r in detail.get("reasons", [])] or [str(detail.get("error", ""))]
        if detail.get("hint"):
            reasons.append(f"hint: {detail['hint']}")
    elif isinstance(detail, list):
        reasons = [str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail]
    elif detail:
        reasons = [str(detail)]
    text = "; ".join(r for r in reasons if r) or response.reason or "no reason given"
    return f"central receiver refused release {bundle.release_id} while {doing} (HTTP {response.status_code}): {text}"


__all__ = ["CentralApiDestination", "RETRY_STATUSES"]
