"""The harmonized dataset: the latest release of each partner, side by side, re-gated.

Why nothing is generalized any more: every release the connector makes now meets the full-row
guarantee (`privacy.kanon_full`: every row's combination of ALL published values occurs >= k times
within its release part), and each row keeps the detail its own group could afford: one row may
show the year 2021, another "2020-2021", a third `*`. Lifting every partner to the coarsest level
any of them used would throw away, for everyone, the detail of the biggest partners (the year and
country the central team counts by).

Why the union keeps k: a `partner` column (from the receiver's own registry) makes every row of
the union one partner's row, so every group of equal rows in the union is a group of one partner's
release, of >= k rows; with k = the smallest partner k the gate checks exactly that on the merged
bytes. Across versions of the harmonized table the rows that change are whole release parts of one
partner (the receiver refuses an upload whose difference from that partner's previous release
would single anyone out), so comparing two downloads shows nothing smaller than k either.

Releases made before the full-row guarantee (`privacy.json` without `"guarantee": "full_row"`)
are left out of the union, and the manifest says so: their k held for six traits only.

    merged = merge_releases([MergeInput("ngo-a", "r-...", 3, csv_bytes, privacy), ...], load_schema())
    merged.release.data_csv      # the bytes that passed the gate
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import pandas as pd

from connector.schema import Schema
from privacy.gate import GateRefused, Release, admit, parse_csv_bytes
from privacy.hierarchies import BUILTIN, TOP, Hierarchy, HierarchyError, is_label, lift, load_builtin

PARTNER_COLUMN = "partner"
RELEASE_COLUMN = "release"


class MergeRefused(Exception):
    """The merged table did not pass the gate; `reasons` are the gate's."""

    def __init__(self, reasons: list[str]):
        self.reasons = list(reasons)
        super().__init__("harmonized dataset refused: " + "; ".join(self.reasons))


# Labels at a level and lifting live in privacy.hierarchies (the release step needs them too).


def builtin_hierarchy(name: Any) -> Hierarchy | None:
    """The packaged hierarchy of that name; None for a partner's own (the receiver cannot know it)."""
    return load_builtin(name) if isinstance(name, str) and name in BUILTIN else None


# -- merging ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeInput:
    partner: str
    release_id: str
    version: int
    data_csv: bytes
    privacy: Mapping[str, Any]


@dataclass
class Merged:
    release: Release
    manifest: dict[str, Any]
    columns: list[str] = field(default_factory=list)


def _table(item: MergeInput) -> pd.DataFrame:
    header, rows = parse_csv_bytes(item.data_csv)
    return pd.DataFrame(rows, columns=header, dtype=object)


def merge_releases(inputs: list[MergeInput], schema: Schema) -> Merged:
    """Merge the given releases (one per partner, normally each partner's latest) and gate the result.

    Raises MergeRefused with the gate's reasons (or when no release can be merged), or ValueError
    when there is nothing to merge.
    """
    if not inputs:
        raise ValueError("no releases to merge yet")
    roles = schema.view_roles()
    excluded: list[dict[str, str]] = []
    used: list[MergeInput] = []
    tables: dict[str, pd.DataFrame] = {}
    for item in inputs:
        if item.privacy.get("method") != "k_anonymity" or item.privacy.get("guarantee") != "full_row":
            excluded.append({"partner": item.partner, "release_id": item.release_id,
                             "reason": "made before the full-row guarantee (k held for six traits only); the partner's next release replaces it"})
            continue
        tables[item.release_id] = _table(item)
        used.append(item)
    if not used:
        raise MergeRefused([f"{e['partner']} {e['release_id']}: {e['reason']}" for e in excluded])
    present = {c for table in tables.values() for c in table.columns}
    order = list(schema.view)
    columns = [c for c in order if c in present] + sorted(present - set(order))
    frames = []
    for item in used:
        table = tables[item.release_id].reindex(columns=columns).fillna("")
        table.insert(0, PARTNER_COLUMN, item.partner)
        frames.append(table)
    merged = pd.concat(frames, ignore_index=True)
    k = min(int(item.privacy.get("k", 0)) for item in used)
    record: dict[str, Any] = {
        "method": "k_anonymity",
        "guarantee": "full_row",
        "k": k,
        "records_out": len(merged),
        "schema_version": schema.version,
    }
    gate_roles = {**roles, PARTNER_COLUMN: "process"}
    try:
        release = admit(merged, record, roles=gate_roles)
    except GateRefused as exc:
        raise MergeRefused(exc.reasons) from None

    manifest = {
        "kind": "harmonized",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "schema_version": schema.version,
        "rows": release.row_count,
        "columns": list(release.columns),
        "sha256": hashlib.sha256(release.data_csv).hexdigest(),
        "releases": [
            {"partner": item.partner, "release_id": item.release_id, "version": item.version, "rows": int(item.privacy.get("records_out", 0)),
             "k": item.privacy.get("k"), "detail": item.privacy.get("detail", {})}
            for item in used
        ],
        "excluded": excluded,
        "detail": merged_detail(used),
        "privacy": record,
        "guarantee": (
            f"every row's combination of all published values, the partner included, occurs at least k={k} times "
            "(k = the smallest partner k); checked by the release gate on these exact bytes. No column was generalized "
            "for the merge: each row keeps the detail its partner's release gave it."
        ),
    }
    return Merged(release=release, manifest=manifest, columns=list(release.columns))


VP_FILE = "victim_perpetrator.csv"


def merge_vp_tables(inputs: list[tuple[MergeInput, bytes]], schema: Schema) -> Release:
    """The harmonized victim-perpetrator table: each partner's latest one side by side with a
    `partner` column, every whole row re-checked for k (k = the smallest partner k). Releases
    without the table add nothing. Raises MergeRefused with the gate's reasons, or ValueError
    when no partner has published the table yet."""
    frames = []
    for item, data in inputs:
        if item.privacy.get("guarantee") != "full_row":
            continue
        header, rows = parse_csv_bytes(data)
        frame = pd.DataFrame(rows, columns=header, dtype=object)
        frame.insert(0, PARTNER_COLUMN, item.partner)
        frames.append((item, frame))
    if not frames:
        raise ValueError("no partner has published a victim-perpetrator table yet")
    columns = [PARTNER_COLUMN, *schema.vp_view, "releasePart"]
    merged = pd.concat([f.reindex(columns=columns).fillna("") for _, f in frames], ignore_index=True)
    k = min(int(item.privacy.get("k", 0)) for item, _ in frames)
    roles = {**{c: col.role for c, col in schema.vp_view.items()}, "releasePart": "process", PARTNER_COLUMN: "process"}
    record = {"method": "k_anonymity", "guarantee": "full_row", "k": k, "records_out": len(merged), "schema_version": schema.version}
    from privacy.view import value_domains

    try:
        return admit(merged, record, roles=roles, domains=value_domains(schema, schema.vp_view))
    except GateRefused as exc:
        raise MergeRefused(exc.reasons) from None


def merged_detail(used: list[MergeInput]) -> dict[str, dict[str, float]]:
    """Per column, the share of the harmonized rows at full detail, coarser, or suppressed: each
    partner's published shares weighted by its rows (computed from published rows only)."""
    total = sum(int(item.privacy.get("records_out", 0)) for item in used) or 1
    out: dict[str, dict[str, float]] = {}
    for item in used:
        rows = int(item.privacy.get("records_out", 0))
        for column, shares in (item.privacy.get("detail") or {}).items():
            if not isinstance(shares, Mapping):
                continue
            slot = out.setdefault(column, {"full": 0.0, "coarser": 0.0, "suppressed": 0.0})
            for key in slot:
                value = shares.get(key, 0.0)
                slot[key] += float(value) * rows / total if isinstance(value, (int, float)) else 0.0
    return {c: {key: round(v, 4) for key, v in shares.items()} for c, shares in out.items()}


def parquet_bytes(release: Release) -> bytes:
    """The gated CSV as Parquet (every column a string, NA as null), for analysts' tools."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    header, rows = parse_csv_bytes(release.data_csv)
    arrays = [pa.array([row[j] if row[j] != "" else None for row in rows], type=pa.string()) for j in range(len(header))]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=header), buffer)
    return buffer.getvalue()


__all__ = ["MergeInput", "MergeRefused", "Merged", "PARTNER_COLUMN", "RELEASE_COLUMN", "is_label", "lift", "merge_releases", "parquet_bytes"]
