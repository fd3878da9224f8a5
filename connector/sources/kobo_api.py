"""kpi's (KoboToolbox) v2 endpoints, one typed method per HTTP call (pyodk's `_endpoints` style).

    api = KpiApi(client, asset_uid="aXyZ")
    page = api.data({"query": '{"_id": {"$gt": 5}}', "sort": '{"_id": 1}', "limit": 1000})

The `HttpClient` owns auth, retries and error messages; this module owns only URLs and answer
shapes. kpi cuts `limit` to 1000 without an error, so a data page says whether more match (its
`next`), and callers page on that, never on a short page (see `connector/sandbox/kobo.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from connector.sources.base import SourceError
from connector.sources.http import HttpClient


@dataclass(frozen=True)
class URLs:
    """Every kpi endpoint this module touches, relative to the server root."""

    asset: str = "api/v2/assets/{uid}/"
    data: str = "api/v2/assets/{uid}/data/"


URLS = URLs()


@dataclass(frozen=True)
class DataPage:
    """One page of submissions and whether kpi's `next` says more match after it."""

    rows: list[dict[str, Any]]
    more: bool


class KpiApi:
    """The calls the Kobo source makes, for one asset."""

    def __init__(self, client: HttpClient, *, asset_uid: str):
        self.client = client
        self.asset_uid = asset_uid

    def _path(self, template: str) -> str:
        return template.format(uid=quote(self.asset_uid, safe=""))

    def asset(self) -> dict[str, Any]:
        body = self.client.get_json(self._path(URLS.asset), params={"format": "json"}, what=f"asset {self.asset_uid}")
        return body if isinstance(body, dict) else {}

    def data(self, params: dict[str, Any], *, what: str = "data") -> DataPage:
        body = self.client.get_json(self._path(URLS.data), params={"format": "json", **params}, what=f"asset {self.asset_uid} {what}")
        rows = body.get("results") if isinstance(body, dict) else None
        if not isinstance(rows, list) or "next" not in body:
            raise SourceError(self.client.where, f"asset {self.asset_uid} {what}: the data API answered without `results` and `next`")
        return DataPage([r for r in rows if isinstance(r, dict)], body["next"] is not None)
