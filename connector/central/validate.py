"""Re-validate an uploaded release: trust nothing the partner's connector says about its own bundle.

Checks, in order, each failure one reason a partner's IT person can act on:
1. the file set: exactly the content files of a release plus `manifest.json` (and the tables of
   EXTRA_TABLE_FILES): any other file, uploaded or only listed in the manifest, is refused;
2. the manifest: its partner is the uploader, every file's SHA-256 and size match, and the release
   id is the content hash the connector computes (so the id is a true idempotency key);
3. the schema: `datapackage.json` and the manifest name the common release schema version this
   receiver speaks, the CSV header equals the package's fields, and each field's name, role and
   type are those of the common release schema; every cell is an allowed value of its column
   (`cells.py`: codes, hierarchy labels at any level, flag names, the partner's registered
   Datasource, blank or `*`) and none is a spreadsheet formula; datapackage.json, codebook.md,
   privacy.json and report.html are byte for byte what the receiver builds itself from the admitted
   table (`build_bundle`), and the manifest's free fields match patterns;
4. privacy: the privacy gate runs again on the received table (no identifier or free-text column,
   k holds, `privacy.json` says as many rows as there are); the received bytes are the gate's
   canonical bytes; k is at least the receiver's minimum; quasi-identifier values are labels of
   the level `privacy.json` claims, and that hierarchy and level are packaged ones this receiver
   knows (an unknown hierarchy or level is refused).

Refusals are `UploadRefused(status, error, reasons, hint)`; the app turns them into 4xx responses.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd

from connector.central.auth import DEFAULT_DATASOURCES
from connector.central.cells import ColumnRule, cell_problems, column_rules, vp_column_rules
from connector.central.merge import builtin_hierarchy, is_label
from privacy.hierarchies import BUILTIN
from connector.release import CONTENT_FILES, DATA_FILE, MANIFEST_FILE, release_id_of, table_schema
from connector.schema import Schema
from privacy.gate import ExtraTable, GateRefused, Release, admit, parse_csv_bytes
from privacy.view import value_domains
from privacy.series import check_series
from privacy.hierarchies import BUILTIN, DEFAULT_COLUMN_HIERARCHIES, load_builtin

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RELEASE_ID = re.compile(r"^r-[0-9a-f]{20}$")
MAX_FILES = 16
_MAX_LISTED = 10
# Tables a release may carry besides data.csv: each passes the file-set check, every cell of it is
# held to its view's allowed values like data.csv's (a column the view does not know is refused),
# and the gate checks it with data.csv in check_upload (every whole row >= k times for a
# k-anonymized release; for a synthetic one, resolution on its combinations and its epsilon a
# recorded part of the release's).
EXTRA_TABLE_FILES: tuple[str, ...] = ("victim_perpetrator.csv",)


def known_files() -> frozenset[str]:
    """Every file name a release may hold: the connector's content files, the manifest, and the
    extra tables of EXTRA_TABLE_FILES. Anything else is refused, listed or not (a file the manifest
    lists would otherwise be stored and served without any check)."""
    return frozenset((*CONTENT_FILES, MANIFEST_FILE, *EXTRA_TABLE_FILES))


def unknown_files(names: Any) -> list[str]:
    """Names not in `known_files()`, sorted; one reason each, for a 422."""
    allowed = known_files()
    return [f"{name[:100]!r} is not a file of a release (allowed: {', '.join(sorted(allowed))})" for name in sorted(map(str, names)) if name not in allowed]


class UploadRefused(Exception):
    """An upload the receiver will not store. `status` is the HTTP status to answer with."""

    def __init__(self, status: int, error: str, reasons: list[str] | None = None, hint: str | None = None, headers: dict[str, str] | None = None):
        self.status = status
        self.error = error
        self.reasons = list(reasons or [])
        self.hint = hint
        self.headers = dict(headers or {})  # e.g. Retry-After on a 503
        super().__init__(error + (": " + "; ".join(self.reasons) if self.reasons else ""))

    def as_detail(self) -> dict[str, Any]:
        return {"error": self.error, "reasons": self.reasons, "hint": self.hint}


@dataclass
class CheckedRelease:
    """An upload that passed every check, with what the receiver stores about it."""

    release_id: str
    partner: str
    files: dict[str, bytes]
    manifest: dict[str, Any]
    privacy: dict[str, Any]
    schema_version: str
    method: str
    rows: int
    k: int | None
    report: dict[str, Any] = field(default_factory=dict)


def _json_object(files: dict[str, bytes], name: str, reasons: list[str]) -> dict[str, Any] | None:
    try:
        value = json.loads(files[name].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        reasons.append(f"{name} is not valid UTF-8 JSON ({type(exc).__name__})")
        return None
    if not isinstance(value, dict):
        reasons.append(f"{name} must be a JSON object")
        return None
    return value


def check_extra_tables(files: dict[str, bytes], rules: dict[str, ColumnRule]) -> list[str]:
    """The cells of every extra table (EXTRA_TABLE_FILES) under the same rules as data.csv's."""
    reasons: list[str] = []
    for name in EXTRA_TABLE_FILES:
        if name not in files:
            continue
        try:
            header, rows = parse_csv_bytes(files[name])
        except (UnicodeDecodeError, csv.Error) as exc:
            reasons.append(f"{name} is not UTF-8 CSV ({type(exc).__name__})")
            continue
        reasons += [f"{name}: {reason}" for reason in cell_problems(header, rows, rules)]
    return reasons


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,39}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)$")
_MANIFEST_KEYS = {"release_id", "partner", "created_at", "run_ids", "schema_version", "connector_version", "method", "rows", "files"}


def rebuilt_file_problems(files: dict[str, bytes], release: Release, manifest: dict[str, Any], partner: str, schema: Schema) -> list[str]:
    """The receiver rebuilds the bundle from the table its own gate admitted (`build_bundle`, the
    connector's one way to make a bundle) and accepts only identical content files: the
    datapackage's descriptions, the codebook and report.html (HTML the central team opens) cannot
    carry anything the connector did not write there. The manifest's free fields get patterns."""
    from connector.release import build_bundle

    expected = build_bundle(release, partner=partner, schema=schema, run_ids=[]).files
    reasons = [f"{name} is not what this receiver builds from the admitted table and privacy.json (edited, or written by another connector version)"
               for name in CONTENT_FILES if name != DATA_FILE and files.get(name) != expected[name]]
    extra = sorted(set(manifest) - _MANIFEST_KEYS)
    if extra:
        reasons.append(f"manifest.json has keys a release manifest does not have: {[str(k)[:40] for k in extra[:_MAX_LISTED]]}")
    run_ids = manifest.get("run_ids")
    if not isinstance(run_ids, list) or not all(isinstance(r, str) and _RUN_ID.match(r) for r in run_ids):
        reasons.append(f"manifest.json run_ids must be a list of ids matching {_RUN_ID.pattern}")
    if not isinstance(manifest.get("created_at"), str) or not _TIMESTAMP.match(manifest["created_at"]):
        reasons.append("manifest.json created_at must be an ISO 8601 time with its offset")
    if not isinstance(manifest.get("connector_version"), str) or not _VERSION.match(manifest["connector_version"]):
        reasons.append(f"manifest.json connector_version must match {_VERSION.pattern}")
    return reasons


def _claims(privacy: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """column -> (hierarchy name, level) as privacy.json states them: `hierarchies`/`levels` of a
    k-anonymous release, `binning` of a synthetic one."""
    names = privacy.get("hierarchies") if isinstance(privacy.get("hierarchies"), dict) else {}
    # a full-row release keeps each row at its own level, down to the finest level it names
    levels = privacy.get("finest_levels") if privacy.get("guarantee") == "full_row" else privacy.get("levels")
    levels = levels if isinstance(levels, dict) else {}
    out = {column: (names.get(column), levels.get(column)) for column in {*names, *levels}}
    binning = privacy.get("binning") if isinstance(privacy.get("binning"), dict) else {}
    for column, spec in binning.items():
        if isinstance(spec, dict) and column not in out:
            out[column] = (spec.get("hierarchy"), spec.get("level"))
    return out


def hierarchy_claims(privacy: dict[str, Any], header: list[str], schema: Schema) -> list[str]:
    """Each quasi-identifier's hierarchy and level in privacy.json must be ones this receiver knows:
    the packaged hierarchy the common release schema names for the column, and a level of it. A
    hierarchy the receiver cannot read gives it no way to check the column's labels or lift them,
    so it is refused, not passed with a warning. A synthetic release's quasi-identifier that was not
    binned claims nothing (its cells are level-0 labels, which the cell rules check)."""
    reasons: list[str] = []
    qis = [c for c in header if schema.role(c) == "quasi_identifier"]
    named = privacy.get("quasi_identifiers") if isinstance(privacy.get("quasi_identifiers"), list) else []
    qis += [c for c in named if c in header and c not in qis]
    claims = _claims(privacy)
    synthetic = privacy.get("method") == "synthetic"
    for column in qis:
        if synthetic and column not in claims:
            continue
        name, level = claims.get(column, (None, None))
        view = schema.view.get(column)
        expected = (view.hierarchy if view else None) or DEFAULT_COLUMN_HIERARCHIES.get(column)
        if not isinstance(name, str) or name not in BUILTIN:
            reasons.append(f"column {column}: privacy.json names hierarchy {str(name)[:40]!r}, which this receiver does not know "
                           f"(it knows {', '.join(BUILTIN)}; the common release schema uses {expected!r} for this column)")
            continue
        if expected is not None and name != expected:
            reasons.append(f"column {column}: privacy.json names hierarchy {name!r}; the common release schema generalizes it with {expected!r}")
            continue
        height = load_builtin(name).height
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= height:
            reasons.append(f"column {column}: privacy.json level {str(level)[:20]!r} is not a level of hierarchy {name} (0 to {height})")
    return reasons


def check_upload(files: dict[str, bytes], *, partner: str, schema: Schema, idempotency_key: str | None = None, min_k: int = 2,
                 datasources: Iterable[str] | None = None) -> CheckedRelease:
    """Every check of the module docstring; returns the checked release or raises UploadRefused.
    `datasources`: the partner's registered `Datasource` values (None: CTDC's defaults)."""
    # 1. the file set
    bad = [name for name in files if not FILE_NAME.match(name)]
    if bad:
        raise UploadRefused(422, "file names not allowed", [f"{name!r} does not match {FILE_NAME.pattern}" for name in bad[:_MAX_LISTED]])
    if len(files) > MAX_FILES:
        raise UploadRefused(422, "too many files", [f"{len(files)} files; a release has at most {MAX_FILES}"])
    unknown = unknown_files(files)
    if unknown:
        raise UploadRefused(422, "files that are not part of a release", unknown[:_MAX_LISTED],
                            hint="upload exactly the files the connector wrote to the release folder")
    missing = [name for name in (*CONTENT_FILES, MANIFEST_FILE) if name not in files]
    if missing:
        raise UploadRefused(422, "the release is incomplete", [f"missing file {name}" for name in missing],
                            hint="upload every file of the release folder, manifest.json included")

    # 2. the manifest
    reasons: list[str] = []
    manifest = _json_object(files, MANIFEST_FILE, reasons)
    if manifest is None:
        raise UploadRefused(422, "manifest.json cannot be read", reasons)
    release_id = manifest.get("release_id")
    if not isinstance(release_id, str) or not RELEASE_ID.match(release_id):
        raise UploadRefused(422, "manifest.json has no valid release_id", [f"release_id {release_id!r} does not match {RELEASE_ID.pattern}"])
    if manifest.get("partner") != partner:
        raise UploadRefused(403, "a partner uploads only under its own id",
                            [f"manifest.json says partner {manifest.get('partner')!r}; the token belongs to {partner!r}"],
                            hint="set partner.id in connector.yaml to the id the central team registered, or use that partner's token")
    if idempotency_key is not None and idempotency_key != release_id:
        raise UploadRefused(400, "Idempotency-Key must be the release id", [f"Idempotency-Key {idempotency_key!r} != release_id {release_id!r}"])
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise UploadRefused(422, "manifest.json has no `files` map")
    unknown = unknown_files(listed)
    if unknown:
        raise UploadRefused(422, "manifest.json lists files that are not part of a release", unknown[:_MAX_LISTED],
                            hint="publish the release folder again exactly as the connector wrote it")
    for name in sorted(set(files) - {MANIFEST_FILE} - set(listed)):
        reasons.append(f"{name} was uploaded but is not listed in manifest.json")
    for name, entry in sorted(listed.items()):
        if name not in files:
            reasons.append(f"{name} is listed in manifest.json but was not uploaded")
            continue
        entry = entry if isinstance(entry, dict) else {}
        actual = hashlib.sha256(files[name]).hexdigest()
        if entry.get("sha256") != actual:
            reasons.append(f"{name}: SHA-256 {actual} does not match the manifest's {entry.get('sha256')!r} (changed or truncated in transit?)")
        if entry.get("bytes") != len(files[name]):
            reasons.append(f"{name}: {len(files[name])} bytes, the manifest says {entry.get('bytes')!r}")
    if not reasons and release_id_of(files) != release_id:
        reasons.append(f"release_id {release_id} is not the content hash of the files ({release_id_of(files)})")
    if reasons:
        raise UploadRefused(422, "manifest checks failed", reasons, hint="publish the release folder again exactly as the connector wrote it")

    # 3. the schema
    datapackage = _json_object(files, "datapackage.json", reasons)
    privacy = _json_object(files, "privacy.json", reasons)
    if datapackage is None or privacy is None:
        raise UploadRefused(422, "release files cannot be read", reasons)
    version = schema.version
    claimed = {
        "manifest.json schema_version": manifest.get("schema_version"),
        "datapackage.json version": datapackage.get("version"),
        "datapackage.json htcds.schema_version": (datapackage.get("htcds") or {}).get("schema_version") if isinstance(datapackage.get("htcds"), dict) else None,
    }
    if "schema_version" in privacy:
        claimed["privacy.json schema_version"] = privacy.get("schema_version")
    for where, value in claimed.items():
        if value != version:
            reasons.append(f"{where} is {value!r}; this receiver accepts the common release schema {version}")
    if any(value != version for value in claimed.values()):
        raise UploadRefused(422, "schema version mismatch", reasons, hint=f"upgrade the connector to one that writes schema {version}")
    resources = datapackage.get("resources")
    tables = [name for name in EXTRA_TABLE_FILES if name in files]
    resource = resources[0] if isinstance(resources, list) and len(resources) == 1 + len(tables) and isinstance(resources[0], dict) else None
    if resource is None or resource.get("path") != DATA_FILE:
        raise UploadRefused(422, "datapackage.json must have one resource with path data.csv first, and one for each further table uploaded")
    fields_spec = (resource.get("schema") or {}).get("fields") if isinstance(resource.get("schema"), dict) else None
    if not isinstance(fields_spec, list) or not all(isinstance(f, dict) for f in fields_spec):
        raise UploadRefused(422, "datapackage.json: the resource has no schema.fields list")
    try:
        header, rows = parse_csv_bytes(files[DATA_FILE])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UploadRefused(422, "data.csv cannot be parsed", [f"data.csv is not UTF-8 CSV ({type(exc).__name__})"]) from None
    names = [str(f.get("name")) for f in fields_spec]
    if header != names:
        reasons.append(f"data.csv header {header[:20]} differs from datapackage.json fields {names[:20]}")
    width = len(header)
    ragged = [i + 2 for i, row in enumerate(rows) if len(row) != width]
    if ragged:
        reasons.append(f"data.csv lines {ragged[:_MAX_LISTED]} do not have {width} fields")
    if reasons:
        raise UploadRefused(422, "data.csv does not match datapackage.json", reasons)
    rules = column_rules(schema, DEFAULT_DATASOURCES if datasources is None else datasources)
    reasons += cell_problems(header, rows, rules, roles={name: spec.role for name, spec in schema.fields.items()})
    reasons += check_extra_tables(files, vp_column_rules(schema, DEFAULT_DATASOURCES if datasources is None else datasources))
    reasons += hierarchy_claims(privacy, header, schema)
    if reasons:
        raise UploadRefused(422, "cells or hierarchies outside what the common release schema allows", reasons,
                            hint="every published column holds only its codes, labels of its packaged hierarchy, blank or *; values are not shown here on purpose")

    # 4. privacy: the gate on exactly the received table
    roles = {**{name: spec.role for name, spec in schema.fields.items()}, **schema.view_roles()}
    table = pd.DataFrame(rows, columns=header, dtype=object)
    extra = {}
    for name in tables:  # the victim-perpetrator table: every whole row >= k times, its cells and roles
        vp_header, vp_rows = parse_csv_bytes(files[name])
        vp_roles = {**{c: col.role for c, col in schema.vp_view.items()}, "releasePart": "process"}
        extra[name] = ExtraTable(pd.DataFrame(vp_rows, columns=vp_header, dtype=object), vp_roles, value_domains(schema, schema.vp_view))
    try:
        release = admit(table, privacy, roles=roles, extra=extra)
    except GateRefused as exc:
        raise UploadRefused(422, "the privacy gate refused the release", exc.reasons,
                            hint="run `htcds-connector preview` at the partner and fix the release config; nothing was stored") from None
    reasons += _schema_fields(release, fields_spec, schema)
    if release.data_csv != files[DATA_FILE]:
        reasons.append("data.csv is not in the gate's canonical form (rows sorted, UTF-8, \\n line ends)")
    for name, data in release.tables:
        if data != files[name]:
            reasons.append(f"{name} is not in the gate's canonical form (rows sorted, UTF-8, \\n line ends)")
    k = privacy.get("k")
    if privacy.get("method") == "k_anonymity" and isinstance(k, int) and k < min_k:
        reasons.append(f"k={k} is below this receiver's minimum k={min_k}")
    resolution = privacy.get("resolution")
    if privacy.get("method") == "synthetic" and (not isinstance(resolution, int) or resolution < min_k):
        # the same floor on the smallest quasi-identifier group, whatever the method is called
        reasons.append(f"resolution={resolution!r} is below this receiver's minimum group size {min_k}")
    if manifest.get("rows") != release.row_count:
        reasons.append(f"manifest.json says rows={manifest.get('rows')!r}; data.csv has {release.row_count}")
    if manifest.get("method") != privacy.get("method"):
        reasons.append(f"manifest.json method {manifest.get('method')!r} != privacy.json method {privacy.get('method')!r}")
    warnings: list[str] = []
    reasons += _levels(release, table, privacy, warnings)
    if not reasons:
        reasons += rebuilt_file_problems(files, release, manifest, partner, schema)
    if reasons:
        raise UploadRefused(422, "the release does not match the common release schema or its privacy record", reasons)

    report = {
        "checks": ["files", "manifest checksums", "release id", f"schema {version}", "privacy gate", "canonical bytes", "levels", "allowed cells", "hierarchies", "rebuilt bundle"],
        "gate": f"passed: k={k} on {release.row_count} rows" if privacy.get("method") == "k_anonymity" else "passed",
        "warnings": warnings,
    }
    return CheckedRelease(
        release_id=release_id,
        partner=partner,
        files=dict(files),
        manifest=manifest,
        privacy=privacy,
        schema_version=version,
        method=str(privacy.get("method")),
        rows=release.row_count,
        k=k if isinstance(k, int) else None,
        report=report,
    )


def _schema_fields(release: Release, received: list[dict[str, Any]], schema: Schema) -> list[str]:
    """Name, role and type of each field as the common release schema has them; allowed values."""
    reasons: list[str] = []
    expected = {f["name"]: f for f in table_schema(release, schema)["fields"]}
    for spec in received:
        name = spec.get("name")
        want = expected.get(name)
        if want is None or name not in schema.view:
            reasons.append(f"column {name}: not a column of the common release schema {schema.version}")
            continue
        for key in ("role", "type"):
            if spec.get(key) != want.get(key):
                reasons.append(f"column {name}: {key} {spec.get(key)!r}, the common release schema says {want.get(key)!r}")
    return reasons  # the cells themselves: cells.cell_problems, before the gate


def _levels(release: Release, table: pd.DataFrame, privacy: dict[str, Any], warnings: list[str]) -> list[str]:
    """Each quasi-identifier's values must be labels of the level privacy.json claims, so the merge
    can lift them soundly."""
    reasons: list[str] = []
    names = privacy.get("hierarchies") if isinstance(privacy.get("hierarchies"), dict) else {}
    if privacy.get("guarantee") == "full_row":
        return _row_levels(table, privacy, names)
    levels = privacy.get("levels") if isinstance(privacy.get("levels"), dict) else {}
    for column in privacy.get("quasi_identifiers", []) or []:
        if column not in table.columns:
            continue
        hierarchy = builtin_hierarchy(names.get(column))
        if hierarchy is None:
            warnings.append(f"column {column}: hierarchy {names.get(column)!r} is not a packaged one; the harmonized dataset shows it as *")
            continue
        level = levels.get(column)
        if not isinstance(level, int) or not 0 <= level <= hierarchy.height:
            reasons.append(f"column {column}: privacy.json level {level!r} is not a level of hierarchy {hierarchy.name}")
            continue
        odd = sorted(v for v in set(table[column]) if not is_label(hierarchy, v, level))
        if odd:
            reasons.append(f"column {column}: values {odd[:_MAX_LISTED]} are not labels of hierarchy {hierarchy.name} at level {level} ({hierarchy.level_names[level]})")
    return reasons


def series_step_problems(previous_privacy: dict[str, Any], previous_csv: bytes, checked: CheckedRelease, previous_vp: bytes | None = None) -> list[str]:
    """Reasons the step from the partner's previous accepted release to this one would single
    someone out (privacy.series.check_series on the two data.csv files), for full-row releases.
    A previous release made before the full-row guarantee is not compared: its rows were never
    protected as whole rows, and the harmonized table leaves it out."""
    if previous_privacy.get("guarantee") != "full_row" or checked.privacy.get("guarantee") != "full_row" or not isinstance(checked.k, int):
        return []
    header, rows = parse_csv_bytes(checked.files[DATA_FILE])
    previous_header, previous_rows = parse_csv_bytes(previous_csv)
    previous_k = previous_privacy.get("k") if isinstance(previous_privacy.get("k"), int) else None
    reasons = check_series(previous_header, previous_rows, header, rows, checked.k, previous_k)
    vp_name = EXTRA_TABLE_FILES[0]
    if previous_vp is not None and vp_name in checked.files:  # the victim-perpetrator table, the same way
        before_header, before_rows = parse_csv_bytes(previous_vp)
        now_header, now_rows = parse_csv_bytes(checked.files[vp_name])
        reasons += [f"{vp_name}: {r}" for r in check_series(before_header, before_rows, now_header, now_rows, checked.k, previous_k)]
    return reasons


def _row_levels(table: pd.DataFrame, privacy: dict[str, Any], names: dict[str, Any]) -> list[str]:
    """Full-row releases keep each row at its own level: every value of a quasi-identifier must be a
    label of its packaged hierarchy at the finest level privacy.json names or any coarser one."""
    reasons: list[str] = []
    finest = privacy.get("finest_levels") if isinstance(privacy.get("finest_levels"), dict) else {}
    for column in privacy.get("quasi_identifiers", []) or []:
        if column not in table.columns:
            continue
        hierarchy = builtin_hierarchy(names.get(column))
        if hierarchy is None:
            reasons.append(f"column {column}: hierarchy {names.get(column)!r} is not one this receiver knows ({', '.join(BUILTIN)})")
            continue
        low = finest.get(column)
        if not isinstance(low, int) or isinstance(low, bool) or not 0 <= low < hierarchy.height:
            reasons.append(f"column {column}: privacy.json finest level {low!r} is not a level of hierarchy {hierarchy.name}")
            continue
        odd = sum(1 for v in set(table[column]) if not any(is_label(hierarchy, v, level) for level in range(low, hierarchy.height + 1)))
        if odd:
            reasons.append(f"column {column}: {odd} distinct values are not labels of hierarchy {hierarchy.name} at level {low} or coarser")
    return reasons


__all__ = ["CheckedRelease", "EXTRA_TABLE_FILES", "FILE_NAME", "MAX_FILES", "RELEASE_ID", "UploadRefused", "check_upload", "hierarchy_claims", "known_files", "release_id_of", "series_step_problems", "unknown_files"]
