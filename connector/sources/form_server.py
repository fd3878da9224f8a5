"""The shared base of the ODK Central and Kobo sources (they once carried the same paging bug twice).

    class KoboSource(FormServerSource): ...   # adds its API class, its passes and its cursor

`FormServerSource` owns what does not depend on the server: the HTTP client (built from the shared
options: `url`, `timeout`, `max_retries`, `verify_tls`), the form definition, the fields a form
offers, the shape of `check`, and time parsing. A subclass supplies auth headers, how to read its
form, what else `check` must try (one row of the feed: credentials that can read the form but not
the data fail there, before the first sync), and `pages()`.

The fields a form offers are more than its questions: the server's metadata under fixed keys
(`_submission_time`, `_updated_at`, ...: `xlsform.META_KEYS`) and each repeat as a list under its own
name. `check` compares a mapping's raw names with what `fields()` offers, so both are offered, or
`check` would warn that `ext_RegistrationDate <- _submission_time` and the repeat-fed fields "will
stay unknown" when every record has them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar

from pydantic import Field

from connector.records import Problem
from connector.sources.base import FieldInfo, Source, SourceAuthError, SourceError, SourceOptions
from connector.sources.http import HttpClient
from connector.sources.xlsform import META_KEYS, FlattenStats, FormDefinition, check_mapping_against_form


class FormServerOptions(SourceOptions):
    """Options every form-server source has; each adds its own (ids, credentials, page size)."""

    url: str = Field(description="the server's address")
    rename: dict[str, str] = Field(default_factory=dict, description="the form's names -> the names the mapping expects")
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    verify_tls: bool = True


class FormServerSource(Source):
    """Base of the ODK Central and Kobo sources."""

    Options: ClassVar[type[SourceOptions]] = FormServerOptions
    auth_hint: ClassVar[str] = "check the credentials reference and the account's role"
    where_hint: ClassVar[str] = "check `url` and the form's ids"

    def __init__(self, config: Any, job: Any):
        super().__init__(config, job)
        self.where = self._where()
        self._client: HttpClient | None = None
        self._form: FormDefinition | None = None
        self.flatten_stats = FlattenStats()

    # -- what a subclass supplies -------------------------------------------------------------------

    @abstractmethod
    def _where(self) -> str:
        """`source ID (type form)`: how every message of this source starts."""

    @abstractmethod
    def _auth_headers(self) -> dict[str, str]:
        """Headers for each request (called per request, so a renewed token is used at once)."""

    @abstractmethod
    def _read_form(self) -> FormDefinition:
        """The published form, read from the server."""

    def _base_url(self) -> str:
        return str(self.options.url)  # type: ignore[attr-defined]

    def _reauthenticate(self) -> Callable[[], bool] | None:
        """A callable that renews a session after a 401, or None when there is none to renew."""
        return None

    def _check_server(self) -> list[Problem]:
        """Problems (and facts, as `info`) about the server itself, before the form is read."""
        return []

    def _check_access(self) -> list[Problem]:
        """Problems reading the data the form feeds (one row), after the form was read."""
        return []

    # -- shared -------------------------------------------------------------------------------------

    @property
    def client(self) -> HttpClient:
        if self._client is None:
            opts = self.options
            self._client = HttpClient(
                self.where,
                self._base_url(),
                stats=self.stats,
                auth_headers=self._auth_headers,
                reauthenticate=self._reauthenticate(),
                timeout=opts.timeout,  # type: ignore[attr-defined]
                max_retries=opts.max_retries,  # type: ignore[attr-defined]
                verify=opts.verify_tls,  # type: ignore[attr-defined]
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def form(self, refresh: bool = False) -> FormDefinition:
        if self._form is None or refresh:
            self._form = self._read_form()
        return self._form

    def fields(self) -> list[FieldInfo]:
        return form_fields(self.form(), self.options.rename)  # type: ignore[attr-defined]

    def check(self) -> list[Problem]:
        problems = self._check_server()
        try:
            form = self.form(refresh=True)
        except SourceAuthError as exc:
            return [*problems, Problem(self.where, message_of(exc), hint=self.auth_hint)]
        except SourceError as exc:
            return [*problems, Problem(self.where, message_of(exc), hint=self.where_hint)]
        problems += self._check_access()
        renames = self.options.rename  # type: ignore[attr-defined]
        return problems + check_mapping_against_form(form, self.config.mapping, where=self.where, renames=renames, base_dir=getattr(self.job, "base_dir", None))


def message_of(exc: SourceError) -> str:
    """The message of a source error without the `source ...:` prefix a Problem already carries."""
    return str(exc).split(": ", 1)[-1]


def form_fields(form: FormDefinition, renames: Mapping[str, str]) -> list[FieldInfo]:
    """The form's questions (renamed as the mapping expects), each repeat by name, and the metadata keys."""
    out = [FieldInfo(renames.get(f.name, f.name), f.label, f.type, f.choices) for f in form.field_infos()]
    names = {f.name for f in out}
    for path in form.repeats:
        name = renames.get(path.rsplit("/", 1)[-1], path.rsplit("/", 1)[-1])
        if name not in names:
            out.append(FieldInfo(name, None, "repeat"))
            names.add(name)
    out.extend(FieldInfo(key, None, "metadata") for key in META_KEYS if key not in names)
    return out


def utc(text: str) -> datetime:
    """A server's ISO time as an aware UTC datetime (kpi's have no zone: they are UTC)."""
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
