"""The job config: one YAML file, validated by pydantic, with errors that name file, line and key.

A partner's IT person writes this file once; every later failure should be traceable to a line of
it. So loading keeps the line of every key, and each validation problem becomes one message
`connector.yaml:12: sources[0].options.path: file not found`. Secrets are references only
(see `connector.secrets`); a literal secret is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from connector.errors import ConfigurationError
from connector.secrets import Secret, fold_secret_references, literal_secret_paths

ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")  # ${NAME} or ${NAME:-default}
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

# The release view's default quasi-identifiers: the CTDC k-anonymized dataset's.
DEFAULT_QUASI_IDENTIFIERS = ["yearOfRegistration", "gender", "ageBroad", "citizenship", "CountryOfExploitation"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartnerConfig(Strict):
    id: str = Field(pattern=ID_PATTERN, description="short id used in release paths, e.g. `ngo-athens`")
    name: str = ""
    datasource: str = Field("Case Management", description="CTDC `Datasource` value for this partner's cases")


class StoreConfig(Strict):
    url: str = Field("sqlite:///state/cases.sqlite", description="SQLAlchemy URL; relative SQLite paths are relative to the config file")


class SourceConfig(Strict):
    id: str = Field(pattern=ID_PATTERN)
    type: str
    mapping: str = Field(description="a packaged mapping name (e.g. `excel_htcds`) or a path to a mapping YAML")
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
    # Validated against the source type's own options model after the whole file is read.
    parsed_options: Any = Field(default=None, exclude=True)


class LDiversityConfig(Strict):
    """l-diversity on meanings: in every class of equal quasi-identifiers, each named sensitive fact
    (any of its columns names it) shows >= l distinct values and no flag of it is 1 in every row."""

    facts: list[str] = Field(default_factory=list, description="sensitive facts, each named by one of its columns")
    attribute: str | None = Field(None, description="one fact (older configs); same as facts: [attribute]")
    l: int = Field(2, ge=2)
    kind: Literal["distinct"] = "distinct"

    @model_validator(mode="after")
    def _some_fact(self) -> "LDiversityConfig":
        if self.attribute and self.attribute not in self.facts:
            self.facts = [*self.facts, self.attribute]
        if not self.facts:
            raise ValueError("name the sensitive facts: facts: [typeOfExploitConcatenated, ...]")
        return self


class SynthConfig(Strict):
    """Differentially private synthesis (`method: synthetic`) with pac-synth, the engine of Microsoft's
    Synthetic Data Showcase. The defaults are SDS's own, except fabrication (`balanced`) and the
    resolution, which the release gate enforces. Every key is explained in the README."""

    epsilon: float = Field(4.0, gt=0, le=50, description="privacy loss of this release; smaller is more private and noisier")
    delta: float | None = Field(None, gt=0, lt=1e-3, description="chance the epsilon bound fails; default 1/(ln n * n) for n records, as SDS does")
    reporting_length: int = Field(3, ge=1, le=5, description="longest attribute combination whose counts the synthesizer preserves")
    resolution: int = Field(10, ge=2, description="smallest count of any quasi-identifier combination in the release (the gate's threshold)")
    max_categories: int = Field(40, ge=2, description="numeric and coded quasi-identifiers are binned up their hierarchy until at most this many values remain")
    levels: dict[str, int] = Field(default_factory=dict, description="fixed binning level per quasi-identifier (0 = as recorded); others follow max_categories")
    suppression_limit: float = Field(0.05, ge=0.0, le=0.5, description="share of SYNTHETIC records that may be removed to reach the resolution")
    accuracy_mode: Literal["prioritize_long_combinations", "balanced", "prioritize_short_combinations"] = Field(
        "prioritize_long_combinations", description="how epsilon is split across combination lengths"
    )
    fabrication_mode: Literal["balanced", "minimize", "progressive", "uncontrolled"] = Field(
        "balanced", description="how hard the noisy counts are thresholded against combinations that never occurred"
    )
    percentile_percentage: int = Field(99, ge=1, le=100, description="percentile of per-record combination counts kept (sensitivity control)")
    percentile_epsilon_proportion: float = Field(0.01, gt=0, lt=1, description="share of epsilon spent choosing that percentile")
    number_of_records_epsilon_proportion: float = Field(0.005, gt=0, lt=1, description="share of epsilon spent on the noisy record count")
    weight_selection_percentile: int = Field(95, ge=1, le=100, description="sampling weight of combinations longer than reporting_length")
    use_synthetic_counts: bool = Field(False, description="balance sampling by what was already synthesized")
    aggregate_counts_scale_factor: float | None = Field(None, gt=0, description="multiply the noisy counts when sampling (SDS default: none)")
    budget: float = Field(12.0, gt=0, description="total epsilon this partner may spend over all synthetic releases (the store keeps the ledger)")
    vp_share: float = Field(0.5, gt=0, lt=1, description="with the victim-perpetrator table: the share of epsilon spent on it (the rest on the victims)")
    vp_max_perpetrators: int = Field(
        2, ge=1, le=5, description="with the victim-perpetrator table: at most this many perpetrators of a victim are read (the table's epsilon is counted per victim)"
    )
    seed: int | None = Field(None, description="only with HTCDS_TESTING=1: fixes the connector's own random choices")

    @model_validator(mode="after")
    def _consistent(self) -> "SynthConfig":
        if self.percentile_epsilon_proportion + self.number_of_records_epsilon_proportion >= 1:
            raise ValueError("percentile_epsilon_proportion + number_of_records_epsilon_proportion must be < 1")
        if self.epsilon > self.budget:
            raise ValueError(f"epsilon {self.epsilon} is larger than the whole budget {self.budget}")
        if self.seed is not None and os.environ.get("HTCDS_TESTING") != "1":
            raise ValueError("seed is accepted only in tests (HTCDS_TESTING=1): a fixed seed would make the noise predictable")
        return self


class ReleaseConfig(Strict):
    method: Literal["k_anonymity", "synthetic"] = "k_anonymity"
    k: int = Field(10, ge=2, description="smallest allowed equivalence class")
    quasi_identifiers: list[str] = Field(default_factory=lambda: list(DEFAULT_QUASI_IDENTIFIERS))
    columns: list[str] | None = Field(None, description="release-view columns to publish; default all")
    levels: dict[str, int] = Field(default_factory=dict, description="finest hierarchy level published per quasi-identifier (default: age in CTDC bands)")
    importance: list[str] = Field(default_factory=list, description="columns whose detail is kept first, most important first")
    part_min_records: int = Field(50, ge=2, description="new or corrected records wait until this many (and at least k) can be released together")
    tables: list[Literal["victims", "victim_perpetrator"]] = Field(
        default_factory=lambda: ["victims"], description="the tables a release carries: victims, and CTDC's victim-perpetrator table"
    )
    # Kept so that older configs still load; the full-row guarantee does not use them (see README).
    search: Literal["optimal", "fixed"] = "optimal"
    metric: Literal["loss", "discernibility", "entropy"] = "loss"
    recoding: Literal["global", "local"] = "global"
    suppression_limit: float = Field(0.05, ge=0.0, le=1.0, description="not used by k_anonymity any more: no record of a part is withheld")
    l_diversity: LDiversityConfig | None = None
    hierarchies: dict[str, dict[str, Any]] = Field(default_factory=dict, description="partner-declared hierarchies by column")
    synthetic: "SynthConfig" = Field(default_factory=lambda: SynthConfig(), description="synthesizer parameters (method: synthetic)")

    @field_validator("quasi_identifiers")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("quasi-identifiers must be distinct")
        return value

    @model_validator(mode="after")
    def _tables(self) -> "ReleaseConfig":
        if "victims" not in self.tables:
            raise ValueError("tables must include victims (the victim-perpetrator table is published with it)")
        return self


# -- destinations: a union discriminated on `type` (a missing `type` means folder, as before) ------


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class FolderDestinationConfig(Strict):
    type: Literal["folder"] = "folder"
    path: str = "releases"


class S3DestinationConfig(Strict):
    """Any S3-compatible bucket (AWS, MinIO, Ceph, Azure through an S3 gateway)."""

    type: Literal["s3"]
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    prefix: str = Field("", description="key prefix before `<partner>/<release id>/`, e.g. `htcds/releases`")
    endpoint_url: str | None = Field(None, description="for S3-compatible services (MinIO ...); default AWS")
    region: str | None = None
    access_key: Secret | None = Field(None, description="omit both keys to use the default AWS credential chain")
    secret_key: Secret | None = None
    sse: Literal["AES256", "aws:kms"] | None = Field(None, description="server-side encryption of every object")
    kms_key_id: str | None = Field(None, description="KMS key for sse: aws:kms (default: the bucket's)")
    multipart_threshold_mb: int = Field(8, ge=5, le=5120, description="files larger than this go up in parts")

    @model_validator(mode="after")
    def _keys_together(self) -> "S3DestinationConfig":
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("give both access_key and secret_key references, or neither (default AWS credential chain)")
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id needs sse: aws:kms")
        if ".." in self.prefix or self.prefix.startswith("/"):
            raise ValueError("prefix must be a relative key prefix without `..`")
        return self


class CentralApiDestinationConfig(Strict):
    """The central repository's HTTPS API (`htcds-connector central serve` behind TLS)."""

    type: Literal["central_api"]
    url: str = Field(description="base URL of the receiver, e.g. https://central.example.org")
    token: Secret = Field(description="the partner's token from `central add-partner`: token_env or token_file")
    timeout: float = Field(60.0, gt=0, le=3600, description="seconds per HTTP request")
    retries: int = Field(5, ge=0, le=20, description="retries after a failed attempt, with exponential back-off")

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("url must be an https:// URL")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError("url must use https:// (plain http is allowed only to 127.0.0.1/localhost for tests)")
        return value.rstrip("/")


DESTINATION_TAGS = ("folder", "s3", "central_api")


def _destination_type(value: Any) -> str:
    kind = value.get("type", "folder") if isinstance(value, dict) else getattr(value, "type", "folder")
    return kind if kind in DESTINATION_TAGS else "folder"


DestinationConfig = Annotated[
    Annotated[FolderDestinationConfig, Tag("folder")] | Annotated[S3DestinationConfig, Tag("s3")] | Annotated[CentralApiDestinationConfig, Tag("central_api")],
    Discriminator(_destination_type),
]


class ScheduleConfig(Strict):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"


class RunConfig(Strict):
    time_budget_minutes: float | None = Field(None, gt=0, description="stop fetching (after the page in flight) when a run has taken this long")
    release_requires_all_sources: bool = Field(True, description="release only when every enabled source synced in this run")
    map_worker_after_records: int | None = Field(
        2000, ge=0, description="records a source delivers in a run before its pages are mapped in a second process, "
        "one page ahead of the commits (0: from the start; null: never, where a run may not start processes)")


class WebhookNotifyConfig(Strict):
    url: str = Field(description="where the JSON POST goes; a URL holding a token belongs in the environment: `url: ${HTCDS_WEBHOOK_URL}`")
    token: Secret | None = Field(None, description="sent as `Authorization: Bearer ...` (`token_env: VARIABLE` or `token_file: PATH`)")
    timeout_seconds: float = Field(10, gt=0)


class EmailNotifyConfig(Strict):
    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: Secret | None = Field(None, description="`password_env: VARIABLE` or `password_file: PATH`")
    sender: str = Field(description="the From address")
    to: list[str] = Field(min_length=1)
    timeout_seconds: float = Field(10, gt=0)


class NotifyConfig(Strict):
    """Who is told, and when: a failed run, the first good run after a failure, many rejections."""

    on_failure: bool = True
    on_recovery: bool = True
    rejections_above: int | None = Field(None, ge=0, description="also notify when a run rejected more values than this")
    webhook: WebhookNotifyConfig | None = None
    email: EmailNotifyConfig | None = None


class JobConfig(Strict):
    partner: PartnerConfig
    store: StoreConfig = Field(default_factory=StoreConfig)
    sources: list[SourceConfig] = Field(min_length=1)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    destination: DestinationConfig = Field(default_factory=FolderDestinationConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)

    @model_validator(mode="after")
    def _unique_source_ids(self) -> "JobConfig":
        seen: set[str] = set()
        for source in self.sources:
            if source.id in seen:
                raise ValueError(f"two sources have the id {source.id!r}; source ids must be unique")
            seen.add(source.id)
        return self


@dataclass
class Config:
    """A loaded job config and where it came from, so relative paths and errors can refer to the file."""

    job: JobConfig
    path: Path
    lines: dict[tuple, int]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve_path(self, value: str | Path) -> Path:
        """Paths in the config are relative to the config file, not to the working directory."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(os.path.normpath(self.base_dir / path))

    def store_url(self) -> str:
        url = self.job.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            return prefix + str(self.resolve_path(url[len(prefix):]))
        return url

    def where(self, *loc: object) -> str:
        """`file:line: key.path` for a config location, for messages from later stages."""
        return _where(self.path, self.lines, tuple(loc))


class ConfigError(ConfigurationError):
    """A config that cannot be used. `problems` has one line per problem, each naming file, line and key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def load_config(path: str | Path) -> Config:
    """Read, substitute `${VAR}`, fold secret references and validate a job config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config ({exc.strerror})"]) from None
    try:
        data, lines = _load_yaml_with_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: the config must be a mapping of keys (partner, sources, ...)"])

    problems: list[str] = []
    data = _substitute_env(data, (), path, lines, problems)
    for loc in literal_secret_paths(data):
        problems.append(
            f"{_where(path, lines, loc)}: literal secret not allowed; use `{loc[-1]}_env: VARIABLE`, "
            f"`{loc[-1]}_file: PATH` or `{loc[-1]}: ${{VARIABLE}}`"
        )
    data = fold_secret_references(data, path.parent)
    _alias_folded_lines(lines)
    if problems:
        raise ConfigError(problems)
    try:
        job = JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, (), path, lines)) from None

    config = Config(job=job, path=path, lines=lines)
    _validate_source_options(config, problems)
    if problems:
        raise ConfigError(problems)
    return config


def _validate_source_options(config: Config, problems: list[str]) -> None:
    from connector.sources import source_class  # sources import config types; import late

    for i, source in enumerate(config.job.sources):
        try:
            cls = source_class(source.type)
        except KeyError as exc:
            problems.append(f"{config.where('sources', i, 'type')}: {exc.args[0]}")
            continue
        # `xlsform: PATH` (the partner's form, for `mapping suggest`) is valid for every source type.
        options = {k: v for k, v in source.options.items() if k != "xlsform"}
        xlsform = source.options.get("xlsform")
        if xlsform is not None and not config.resolve_path(str(xlsform)).is_file():
            problems.append(f"{config.where('sources', i, 'options', 'xlsform')}: file not found: {config.resolve_path(str(xlsform))}")
        try:
            source.parsed_options = cls.Options.model_validate(options)
        except ValidationError as exc:
            problems.extend(_describe(exc, ("sources", i, "options"), config.path, config.lines))


def _load_yaml_with_lines(text: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML and remember the 1-based line of every key and list item, by path."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[tuple, int] = {}
    if node is None:
        return None, lines

    def walk(n: yaml.Node, loc: tuple) -> None:
        lines.setdefault(loc, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                key_loc = loc + (key_node.value,)
                lines[key_loc] = key_node.start_mark.line + 1
                walk(value_node, key_loc)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, loc + (i,))

    walk(node, ())
    return yaml.safe_load(text), lines


def _alias_folded_lines(lines: dict[tuple, int]) -> None:
    """After `password_env` became `password`, errors on `password` should still find the line."""
    for loc, line in list(lines.items()):
        if loc and isinstance(loc[-1], str):
            for suffix in ("_env", "_file"):
                if loc[-1].endswith(suffix):
                    lines.setdefault(loc[:-1] + (loc[-1][: -len(suffix)],), line)


def _substitute_env(node: Any, loc: tuple, path: Path, lines: dict, problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute_env(v, loc + (k,), path, lines, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_env(v, loc + (i,), path, lines, problems) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        from connector.secrets import ENV_REFERENCE, SECRET_KEY_NAMES

        if loc and loc[-1] in SECRET_KEY_NAMES and ENV_REFERENCE.match(node):
            return node  # a secret reference: read when needed, never copied into the config

        def replace(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append(f"{_where(path, lines, loc)}: environment variable {name} is not set")
            return ""

        return ENV_VAR.sub(replace, node)
    return node


def _where(path: Path, lines: dict[tuple, int], loc: tuple) -> str:
    line = None
    probe = loc
    while probe is not None:
        if probe in lines:
            line = lines[probe]
            break
        probe = probe[:-1] if probe else None
    key = _format_loc(loc)
    return f"{path}:{line}: {key}" if line else f"{path}: {key}"


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(exc: ValidationError, prefix: tuple, path: Path, lines: dict) -> list[str]:
    """One plain-words line per problem, at the line of the key at fault (not pydantic's wording)."""
    problems: list[tuple[int, str]] = []
    seen: set[tuple] = set()
    for error in exc.errors():
        loc = prefix + tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if len(loc) > 1 and loc[0] == "destination" and loc[1] in DESTINATION_TAGS:
            loc = loc[:1] + loc[2:]  # the union's tag is not a key the user wrote
        if loc in seen or any(loc[: len(other)] == other for other in seen):
            continue  # one problem once: a union reports each of its branches, a bad mapping each key inside it
        seen.add(loc)
        problems.append((_line_of(lines, loc), f"{_where(path, lines, loc)}: {plain_message(error, loc)}"))
    return [text for _, text in sorted(problems, key=lambda item: item[0])]


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 0)


# pydantic error type -> what to say (ctx values filled in); anything else: pydantic's text with
# "Input should be" turned into "must be".
_PLAIN = {
    "extra_forbidden": "unknown key (check its spelling and indentation)",
    "missing": "required key is missing",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text (put it in quotes)",
    "list_type": "must be a list: one `- item` per line below the key, or the items between square brackets",
    "dict_type": "must be a group of keys (`key: value` lines indented below it)",
    "model_type": "must be a group of keys (`key: value` lines indented below it)",
    "model_attributes_type": "must be a group of keys (`key: value` lines indented below it)",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
    "union_tag_invalid": "unknown type {tag}; use one of {expected_tags}",
}
_PATTERN_WORDS = {
    "id": "must be lower-case letters, digits, '-' or '_', starting with a letter or digit (at most 63), e.g. `ngo-athens`",
    "bucket": "must be an S3 bucket name: 3-63 lower-case letters, digits, '.' or '-', starting and ending with a letter or digit",
}


def plain_message(error: dict[str, Any], loc: tuple) -> str:
    """A pydantic error in words a partner's IT person reads: no "Input should be", no regex."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        return _PATTERN_WORDS.get(str(loc[-1]) if loc else "", "has characters that are not allowed here")
    if kind == "literal_error" and loc == ("destination", "type"):
        return f"unknown destination type {error.get('input')!r}; use one of {', '.join(DESTINATION_TAGS)}"
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"must be one of: {expected}"
    if kind in _PLAIN:
        try:
            return _PLAIN[kind].format(**{k: str(v).replace("'", "") for k, v in ctx.items()})
        except (KeyError, IndexError):
            pass
    message = str(error.get("msg", "is not valid"))
    for lead in ("Value error, ", "Assertion failed, "):
        if message.startswith(lead):
            return message[len(lead) :]
    return message.replace("Input should be", "must be").replace("String should", "must")


__all__ = [
    "Config",
    "ConfigError",
    "JobConfig",
    "ReleaseConfig",
    "Secret",
    "SynthConfig",
    "SourceConfig",
    "load_config",
]
