"""Unattended OAuth 2.0 for Salesforce: JWT bearer, client credentials, username-password + token.

A scheduled connector cannot open a browser, so these are the three flows that need no person:

    token = request_token(session, settings)          # POST {login_url}/services/oauth2/token
    sf = Salesforce(instance_url=token.instance_url, session_id=token.access_token, session=session)

simple-salesforce's own login builds `https://{domain}.salesforce.com`, which cannot reach a My
Domain URL given in full or the local sandbox, so the token request is made here and the session
handed to simple-salesforce. Secrets are read at the moment of the request and never appear in a
message: errors quote Salesforce's `error` / `error_description`, never the form that was sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from requests.adapters import HTTPAdapter

from connector.secrets import Secret, SecretMissing
from connector.sources.base import SourceAuthError, SourceError

TOKEN_PATH = "/services/oauth2/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(frozen=True)
class AuthSettings:
    """What a token request needs; built from the source options (secrets stay references)."""

    where: str  # "source sf-main" for messages
    login_url: str
    flow: str  # "jwt" | "client_credentials" | "password"
    client_id: str
    client_secret: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    security_token: Secret | None = None
    private_key: Secret | None = None
    audience: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class Token:
    access_token: str
    instance_url: str

    def __repr__(self) -> str:  # never show the token
        return f"Token(instance_url={self.instance_url!r})"


class ConnectorAdapter(HTTPAdapter):
    """Applies a default timeout and, when given, a CA file to every request of the session.

    requests lets REQUESTS_CA_BUNDLE override `session.verify`, so a partner's private CA (or the
    sandbox's certificate) is enforced here, per request, instead.
    """

    def __init__(self, timeout: float, ca_file: str | None = None):
        self.timeout = timeout
        self.ca_file = ca_file
        super().__init__(pool_maxsize=4)

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        if self.ca_file:
            kwargs["verify"] = self.ca_file
        return super().send(request, **kwargs)


def login_base(login_url: str | None, domain: str | None) -> str:
    """`https://login.salesforce.com`, `https://test.salesforce.com`, a My Domain URL, or `domain`."""
    if domain:
        domain = domain.strip().removesuffix(".salesforce.com")
        return f"https://{domain}.salesforce.com"
    return (login_url or "https://login.salesforce.com").rstrip("/")


def jwt_audience(login_url: str) -> str:
    """The `aud` claim Salesforce expects: login or test, whatever My Domain the token URL is on."""
    host = urlsplit(login_url).hostname or ""
    if host in ("login.salesforce.com", "test.salesforce.com"):
        return f"https://{host}"
    if host.endswith(".sandbox.my.salesforce.com") or host.startswith("test."):
        return "https://test.salesforce.com"
    if host.endswith(".salesforce.com"):
        return "https://login.salesforce.com"
    return login_url  # a local sandbox or a Experience Cloud site: its own URL


def _secret(settings: AuthSettings, name: str, secret: Secret | None) -> str:
    if secret is None:
        raise SourceAuthError(settings.where, f"the {settings.flow} flow needs `{name}` (as `{name}_env` or `{name}_file`)")
    try:
        return secret.get()
    except SecretMissing as exc:
        raise SourceAuthError(settings.where, f"{name}: {exc}") from None


def token_form(settings: AuthSettings) -> dict[str, str]:
    """The form of the token request for the configured flow (holds secrets: never log it)."""
    if settings.flow == "jwt":
        if not settings.username:
            raise SourceAuthError(settings.where, "the jwt flow needs `username` (the integration user)")
        key = _secret(settings, "private_key", settings.private_key)
        claims = {"iss": settings.client_id, "sub": settings.username, "aud": settings.audience or jwt_audience(settings.login_url), "exp": int(time.time()) + 180}
        try:
            assertion = jwt.encode(claims, key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            where = settings.private_key.where() if settings.private_key else "private_key"
            raise SourceAuthError(settings.where, f"the private key ({where}) is not a usable RSA private key in PEM form ({type(exc).__name__})") from None
        return {"grant_type": JWT_GRANT, "assertion": assertion}
    if settings.flow == "client_credentials":
        secret = _secret(settings, "client_secret", settings.client_secret)
        return {"grant_type": "client_credentials", "client_id": settings.client_id, "client_secret": secret}
    if settings.flow == "password":
        if not settings.username:
            raise SourceAuthError(settings.where, "the password flow needs `username`")
        secret = _secret(settings, "client_secret", settings.client_secret)
        password = _secret(settings, "password", settings.password)
        token = _secret(settings, "security_token", settings.security_token) if settings.security_token else ""
        return {"grant_type": "password", "client_id": settings.client_id, "client_secret": secret, "username": settings.username, "password": password + token}
    raise SourceAuthError(settings.where, f"unknown auth flow {settings.flow!r}; use jwt, client_credentials or password")


def request_token(session: requests.Session, settings: AuthSettings) -> Token:
    """Log in once; SourceAuthError for refused credentials, SourceError(transient) when unreachable."""
    url = settings.login_url + TOKEN_PATH
    form = token_form(settings)
    try:
        response = session.post(url, data=form, headers={"Accept": "application/json"}, timeout=settings.timeout)
    except requests.exceptions.SSLError:
        raise SourceError(settings.where, f"TLS verification failed for {settings.login_url}; check login_url (and ca_file)") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise SourceError(settings.where, f"cannot reach {settings.login_url} ({type(exc).__name__}); check login_url", transient=True) from None
    try:
        body = response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown content").split(";")[0]
        raise SourceAuthError(
            settings.where, f"{url} answered {response.status_code} with {kind}, not a Salesforce token; check login_url (or domain)"
        ) from None
    if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        error = body.get("error", response.status_code) if isinstance(body, dict) else response.status_code
        description = body.get("error_description", "") if isinstance(body, dict) else ""
        hint = {
            "invalid_client_id": "check client_id (the connected app's consumer key)",
            "invalid_client": "check client_id and client_secret",
            "invalid_grant": "check username, the password + security token, or that the connected app holds the certificate of this private key (and it has not expired)",
        }.get(str(error), "")
        raise SourceAuthError(settings.where, f"login refused by {settings.login_url}: {error}: {description}" + (f" ({hint})" if hint else ""))
    instance = str(body.get("instance_url") or "").rstrip("/")
    if not instance.startswith("https://"):
        raise SourceAuthError(settings.where, f"token answer from {settings.login_url} has no https instance_url")
    return Token(access_token=str(body["access_token"]), instance_url=instance)
