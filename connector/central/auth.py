"""Tokens: `<id>.<secret>`, printed once, stored as the SHA-256 of the secret only.

Why the two halves: the id finds the row without comparing secrets in a database index; the secret
is then compared with `hmac.compare_digest`, in constant time. A token is never logged: the app
logs the principal (role, partner), never the header.

    token = add_partner(engine, "ngo-a", "NGO A")     # shown once to the central team
    principal = authenticate(engine, token)             # Principal(role="partner", partner="ngo-a")
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from typing import Iterable

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from connector.central.db import now, partner_datasources, partners, tokens

PARTNER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # the connector's own ID_PATTERN
DEFAULT_DATASOURCES = ("Case Management", "Hotline")  # CTDC's Datasource values
DATASOURCE = re.compile(r"^[A-Za-z][A-Za-z0-9 ()&/.,'_-]{0,99}$")  # printable, no formula start
_TOKEN = re.compile(r"^([0-9a-f]{16})\.([A-Za-z0-9_-]{20,100})$")


@dataclass(frozen=True)
class Principal:
    role: str  # "partner" | "admin"
    partner: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class PartnerExists(ValueError):
    pass


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _issue(engine: Engine, role: str, partner: str | None) -> str:
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(tokens).values(id=token_id, partner_id=partner, role=role, secret_sha256=_digest(secret), created_at=now()))
    return f"{token_id}.{secret}"


def add_partner(engine: Engine, partner: str, name: str = "", *, new_token: bool = False, datasources: Iterable[str] = ()) -> str:
    """Create a partner and return its first token. With `new_token`, an existing partner gets an
    additional token (rotation: revoke the old one afterwards). `datasources`: the `Datasource`
    values its releases may carry (the receiver's registry, not the upload, decides them); none
    given: DEFAULT_DATASOURCES."""
    if not PARTNER_ID.match(partner):
        raise ValueError(f"partner id {partner!r} must match {PARTNER_ID.pattern} (the connector's partner.id)")
    chosen = sorted(set(datasources))
    bad = [d for d in chosen if not DATASOURCE.match(d)]
    if bad:
        raise ValueError(f"a Datasource must match {DATASOURCE.pattern}")
    with engine.begin() as conn:
        exists = conn.execute(select(partners.c.id).where(partners.c.id == partner)).first()
        if exists and not new_token:
            raise PartnerExists(f"partner {partner} exists; use --new-token to issue another token")
        if not exists:
            conn.execute(insert(partners).values(id=partner, name=name, created_at=now()))
        known = set(conn.execute(select(partner_datasources.c.datasource).where(partner_datasources.c.partner_id == partner)).scalars())
        if set(chosen) - known:
            conn.execute(insert(partner_datasources), [{"partner_id": partner, "datasource": d} for d in chosen if d not in known])
    return _issue(engine, "partner", partner)


def partner_datasource_values(engine: Engine, partner: str) -> tuple[str, ...]:
    """The `Datasource` values the registry allows for `partner` (DEFAULT_DATASOURCES if none set)."""
    with engine.connect() as conn:
        values = conn.execute(select(partner_datasources.c.datasource).where(partner_datasources.c.partner_id == partner)).scalars().all()
    return tuple(sorted(values)) or DEFAULT_DATASOURCES


def add_admin(engine: Engine) -> str:
    """A token for the central team: reads everything, uploads nothing."""
    return _issue(engine, "admin", None)


def authenticate(engine: Engine, presented: str | None) -> Principal | None:
    """The principal a token stands for, or None. Constant-time on the secret half."""
    if not presented:
        return None
    match = _TOKEN.match(presented.strip())
    if not match:
        return None
    token_id, secret = match.groups()
    with engine.connect() as conn:
        row = conn.execute(select(tokens).where(tokens.c.id == token_id)).first()
    expected = row.secret_sha256 if row is not None else _digest("no such token")
    ok = hmac.compare_digest(_digest(secret), expected)
    if row is None or not ok or row.revoked_at is not None:
        return None
    return Principal(role=row.role, partner=row.partner_id)


__all__ = ["DEFAULT_DATASOURCES", "PARTNER_ID", "PartnerExists", "Principal", "add_admin", "add_partner", "authenticate", "partner_datasource_values"]
