"""The release bundle: the files that leave the partner, built only from a gate-admitted `Release`.

A bundle is content-addressed: the release id is a hash of the data and of the files describing it
(not of the time or the run), so the same protected table gives the same id and publishing it again
is a no-op at every destination. `manifest.json` adds provenance (partner, time, run ids) and the
SHA-256 of every file, so the central team can verify what arrived.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from connector import __version__
from connector.schema import Schema
from privacy.gate import Release

DATA_FILE = "data.csv"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.html"
# report.html is rendered from privacy.json alone and deterministically, so it is content and is hashed.
CONTENT_FILES = (DATA_FILE, "datapackage.json", "codebook.md", "privacy.json", REPORT_FILE)

# Frictionless types of release-view columns; quasi-identifiers are strings because generalization
# turns numbers into bands ("18--20") and suppressed cells into "*".
_FRICTIONLESS = {"integer", "number", "string", "boolean", "year", "date"}


_BUNDLE_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class Bundle:
    """The files of one release. Made only by `build_bundle` from a gate-admitted `Release`.

    Destinations publish a bundle's bytes as they are; so, like `Release`, a bundle carries a seal
    over its content that only this module can make, and one assembled elsewhere (or changed with
    `dataclasses.replace`) cannot exist: no destination can be handed bytes the gate did not pass.
    """

    release_id: str
    partner: str
    files: dict[str, bytes]  # file name -> bytes, manifest included
    manifest: dict[str, Any]
    _seal: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not hmac.compare_digest(self._seal, _bundle_seal(self.release_id, self.partner, self.files)):
            raise TypeError("a Bundle is made only by connector.release.build_bundle, from a release the gate admitted")


def _bundle_seal(release_id: str, partner: str, files: dict[str, bytes]) -> bytes:
    digest = hmac.new(_BUNDLE_KEY, f"{release_id}\0{partner}\0".encode(), hashlib.sha256)
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.digest()


def _sealed(release_id: str, partner: str, files: dict[str, bytes], manifest: dict[str, Any]) -> Bundle:
    return Bundle(release_id, partner, files, manifest, _bundle_seal(release_id, partner, files))


def canonical_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


# Further tables a release may carry (the gate checked them with data.csv); hashed after the
# content files when present, so a release without them keeps the id it always had.
TABLE_FILES = ("victim_perpetrator.csv",)


def content_files(files: dict[str, bytes]) -> tuple[str, ...]:
    return (*CONTENT_FILES, *(name for name in TABLE_FILES if name in files))


def release_id_of(files: dict[str, bytes]) -> str:
    """The content hash a release is named by; the central receiver recomputes it on upload."""
    digest = hashlib.sha256()
    for name in content_files(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).hexdigest().encode() + b"\n")
    return "r-" + digest.hexdigest()[:20]


def vp_table_schema(schema: Schema, columns: list[str] | None = None) -> dict[str, Any]:
    """Frictionless Table Schema of the victim-perpetrator table: `columns` (its CSV header; default
    every column of its view, then the part, as a k-anonymized release publishes it). A synthetic
    release publishes fewer (the victim columns it shares with its victim table) and no part."""
    names = list(columns) if columns is not None else [*schema.vp_view, "releasePart"]
    fields = []
    for name, column in [(n, schema.vp_view[n]) for n in names if n in schema.vp_view]:
        kind = column.type if column.type in _FRICTIONLESS and column.role != "quasi_identifier" and column.type != "year" else "string"
        spec: dict[str, Any] = {"name": name, "type": kind, "role": column.role}
        if column.description:
            spec["description"] = column.description
        if column.values and column.role != "quasi_identifier":
            spec["constraints"] = {"enum": list(column.values)}
        fields.append(spec)
    if "releasePart" in names:
        fields.append({"name": "releasePart", "type": "string", "role": "process"})
    return {"fields": fields, "missingValues": ["", "*"]}


def table_schema(release: Release, schema: Schema) -> dict[str, Any]:
    """A Frictionless Table Schema for exactly the columns the gate admitted."""
    fields = []
    for name in release.columns:
        column = schema.view.get(name)
        role = column.role if column else "unknown"
        kind = column.type if column and column.type in _FRICTIONLESS else "string"
        if role == "quasi_identifier" or kind == "year":
            kind = "string"
        spec: dict[str, Any] = {"name": name, "type": kind, "role": role}
        if column is not None and column.description:
            spec["description"] = column.description
        if column is not None and column.values and role != "quasi_identifier":
            spec["constraints"] = {"enum": list(column.values)}
        fields.append(spec)
    # "*" is a cell suppressed to keep every published row shared by k cases: missing, as blank is
    return {"fields": fields, "missingValues": ["", "*"]}


def build_bundle(release: Release, *, partner: str, schema: Schema, run_ids: list[str], created_at: datetime | None = None) -> Bundle:
    """Assemble the bundle's files from a gate-admitted release. Pure: writes nothing."""
    from connector.codebook import render_codebook_markdown
    from privacy.report import render_report

    datapackage = {
        "profile": "tabular-data-package",
        "name": f"htcds-release-{partner}",
        "title": f"HTCDS privacy-protected release of {partner}",
        "version": schema.version,
        "licenses": [{"name": "CC-BY-4.0", "path": "https://creativecommons.org/licenses/by/4.0/"}],
        "resources": [
            {
                "name": "cases",
                "path": DATA_FILE,
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": table_schema(release, schema),
            }
        ],
        "htcds": {"schema_version": schema.version, "method": release.privacy.get("method")},
    }
    for name, data in release.tables:
        header = data.decode("utf-8").split("\n", 1)[0].split(",")  # the gate's CSV: plain column names
        datapackage["resources"].append({
            "name": name.removesuffix(".csv").replace("_", "-"), "path": name, "profile": "tabular-data-resource", "format": "csv",
            "mediatype": "text/csv", "encoding": "utf-8", "schema": vp_table_schema(schema, header),
        })
    files = {
        DATA_FILE: release.data_csv,
        "datapackage.json": canonical_json(datapackage),
        "codebook.md": render_codebook_markdown(schema).encode("utf-8"),
        "privacy.json": canonical_json(release.privacy),
        REPORT_FILE: render_report(release.privacy, partner=partner),
        **dict(release.tables),
    }
    release_id = release_id_of(files)
    created = (created_at or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    manifest = {
        "release_id": release_id,
        "partner": partner,
        "created_at": created,
        "run_ids": run_ids,
        "schema_version": schema.version,
        "connector_version": __version__,
        "method": release.privacy.get("method"),
        "rows": release.row_count,
        "files": {name: {"sha256": hashlib.sha256(files[name]).hexdigest(), "bytes": len(files[name])} for name in content_files(files)},
    }
    files[MANIFEST_FILE] = canonical_json(manifest)
    return _sealed(release_id, partner, files, manifest)
