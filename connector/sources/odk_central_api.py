"""ODK Central's REST and OData endpoints, one typed method per HTTP call (pyodk's `_endpoints` style).

    api = CentralApi(client, project_id=1, form_id="cases")
    page = api.submissions({"$top": "100", "$filter": "__system/updatedAt ge 2024-01-01T00:00:00Z"})

The `HttpClient` owns auth, retries and error messages; this module owns only URLs and answer
shapes: an answer that is not the documented shape is a `SourceError` naming the form. Shapes and
versions follow getodk/central-backend (see `connector/sandbox/odk_central.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from connector.sources.base import SourceError
from connector.sources.http import HttpClient, SourceHttpError


@dataclass(frozen=True)
class URLs:
    """Every Central endpoint this module touches, relative to the server root."""

    sessions: str = "v1/sessions"
    form: str = "v1/projects/{project_id}/forms/{form_id}"
    form_xml: str = "v1/projects/{project_id}/forms/{form_id}.xml"
    fields: str = "v1/projects/{project_id}/forms/{form_id}/fields"
    service: str = "v1/projects/{project_id}/forms/{form_id}.svc"
    submissions: str = "v1/projects/{project_id}/forms/{form_id}.svc/Submissions"
    submission: str = "v1/projects/{project_id}/forms/{form_id}.svc/Submissions('{instance_id}')"
    version: str = "version.txt"  # served by Central's nginx, no auth (getodk/central files/prebuild/write-version.sh)


URLS = URLs()


@dataclass(frozen=True)
class ODataPage:
    """One page of an OData table: its rows and the server's next link (None at the end)."""

    rows: list[dict[str, Any]]
    next_link: str | None


class CentralApi:
    """The calls the ODK Central source makes, for one form of one project."""

    def __init__(self, client: HttpClient, *, project_id: int, form_id: str):
        self.client = client
        self.project_id = project_id
        self.form_id = form_id

    def _path(self, template: str, **extra: str) -> str:
        return template.format(project_id=self.project_id, form_id=quote(self.form_id, safe=""), **extra)

    def login(self, email: str | None, password: str) -> str | None:
        """A web user's session token (POST /v1/sessions), or None if the answer had none."""
        body = self.client.request_json("POST", URLS.sessions, what="login (POST /v1/sessions)", json_body={"email": email, "password": password}, auth=False)
        token = body.get("token") if isinstance(body, dict) else None
        return str(token) if token else None

    def version_text(self) -> str | None:
        """`/version.txt`; None where the server does not serve it (not the official Docker setup)."""
        try:
            return self.client.request("GET", URLS.version, what="server version (/version.txt)", auth=False).text
        except SourceError:
            return None

    def form(self) -> dict[str, Any]:
        body = self.client.get_json(self._path(URLS.form), what=f"form {self.form_id}")
        return body if isinstance(body, dict) else {}

    def form_xml(self) -> str:
        return self.client.get_text(self._path(URLS.form_xml), what=f"form {self.form_id} definition (XML)")

    def fields(self) -> list[dict[str, Any]]:
        body = self.client.get_json(self._path(URLS.fields), params={"odata": "true"}, what=f"form {self.form_id} fields")
        if not isinstance(body, list):
            raise SourceError(self.client.where, f"form {self.form_id}: /fields did not answer a list")
        return body

    def submissions(self, params: dict[str, str] | None, *, what: str = "submissions") -> ODataPage:
        """One page of the `Submissions` table."""
        return self._page(self._path(URLS.submissions), params, what)

    def follow(self, next_link: str, *, what: str) -> ODataPage:
        """The page a next link points to (its query is part of the link)."""
        return self._page(next_link, None, what)

    def repeat(self, link: str, *, what: str) -> ODataPage:
        """A repeat's rows from a navigation link (`Submissions('id')/rep`), relative to the service."""
        return self._page(f"{self._path(URLS.service)}/{link}", None, what)

    def submission(self, instance_id: str, *, expand: bool) -> dict[str, Any] | None:
        """One submission's row; None when Central has no live one (deleted or purged: 404)."""
        path = self._path(URLS.submission, instance_id=quote(instance_id, safe=":"))
        try:
            page = self._page(path, {"$expand": "*"} if expand else None, f"record {instance_id}")
        except SourceHttpError as exc:
            if exc.status == 404:
                return None
            raise
        return page.rows[0] if page.rows else None

    def _page(self, path_or_url: str, params: dict[str, str] | None, what: str) -> ODataPage:
        body = self.client.get_json(path_or_url, params=params, what=f"form {self.form_id} {what}")
        rows = body.get("value") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise SourceError(self.client.where, f"form {self.form_id}: the OData feed answered without a `value` list")
        return ODataPage([r for r in rows if isinstance(r, dict)], body.get("@odata.nextLink") or None)
