"""The next k-anonymized release of a job: which frozen parts it keeps, retires and adds.

Why here and not in privacy/: deciding the next release reads the store (the parts already out and
the records they hold); privacy/ only protects tables and checks bytes. The rules themselves are
`privacy.series.plan_parts`; this module feeds it the live records and the stored parts, protects
the new part with `privacy.protect.protect_part`, and composes the release table that the gate
will check against the previous release.

    nxt = next_k_release(store, job, keys, view, setup, min_new=50)
    release = admit(nxt.table, nxt.privacy, roles=roles, previous=nxt.previous_csv)
    store.record_release(..., series=nxt.change)
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from connector.store import SeriesChange, Store
from privacy.gate import to_csv_bytes
from privacy.protect import KSetup, describe_release, protect_part_tables
from privacy.vp_release import OWNER, PROFILE, describe_vp
from privacy.series import PART_COLUMN, Part, Plan, part_label, plan_parts


@dataclass
class NextRelease:
    """What the next k-anonymized release is, before the gate."""

    table: pd.DataFrame  # every published row: kept parts, then the new part
    privacy: dict[str, Any]  # computed from `table` and the settings only
    previous_csv: bytes | None  # the release the series published last (None: nothing yet)
    change: SeriesChange
    plan: Plan
    held: dict[str, int] = field(default_factory=dict)  # local only: never in a published file
    vp_table: pd.DataFrame | None = None  # the victim-perpetrator rows of every part, when published
    previous_vp_csv: bytes | None = None
    vp_new: tuple[pd.DataFrame, tuple[Any, ...]] | None = None  # the new part's rows and their victims (in-process)

    @property
    def changed(self) -> bool:
        return self.plan.changes


def row_digests(view: pd.DataFrame) -> list[str]:
    """A digest of each view row's values: a published record whose digest changes was corrected.

    The text of a row is its cells as `str` ("\x00" for unknown) joined by "\x1f". Each column's
    distinct values are turned into text once and shared by the rows that hold them, so the
    table is never copied as one new string per cell (issue #16: a release within 1 GiB)."""
    texts = [_cell_texts(view.iloc[:, j]) for j in range(view.shape[1])]
    return [hashlib.sha256("\x1f".join(cells).encode("utf-8")).hexdigest()[:32] for cells in zip(*texts)] if texts else [
        hashlib.sha256(b"").hexdigest()[:32] for _ in range(len(view))
    ]


def _cell_texts(column: pd.Series) -> np.ndarray:
    """Each cell's text in a row digest, as an object array: the distinct values (and one unknown)
    go through exactly the conversion the digests have always used (a frame's `.astype(str)`,
    which reads "\x00" as ""), then every row takes its value's text."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    distinct = pd.concat([pd.Series(uniques, dtype=column.dtype), pd.Series([None], dtype=column.dtype)], ignore_index=True)
    frame = distinct.to_frame("v")
    texts = frame.astype(object).where(frame.notna(), "\x00").astype(str)["v"].to_numpy(dtype=object)
    return texts[codes]  # code -1 (unknown) is the last entry


def _read_strings(data: bytes) -> pd.DataFrame:
    """CSV bytes as a frame of strings ("" for blank); equal cells of a column share one string
    object (read as categories, then as objects), so a 100,000-row part costs pointers, not copies."""
    frame = pd.read_csv(io.BytesIO(data), dtype="category", keep_default_na=False)
    return frame.astype(object)


def read_part(part: Part) -> pd.DataFrame:
    """A stored part's published rows, every cell a string ("" for blank)."""
    return _read_strings(part.data_csv)


def read_vp(part: Part) -> pd.DataFrame | None:
    return _read_strings(part.vp_csv) if part.vp_csv is not None else None


def next_k_release(store: Store, job: str, keys: list[tuple[str, str]], table: pd.DataFrame, setup: KSetup, *, min_new: int, schema: Any = None) -> NextRelease:
    """Plan and build the next release from the live records' keys and their publishable rows
    (`table`, aligned with `keys`, identifiers and free text already dropped)."""
    digests = dict(zip(keys, row_digests(table)))
    vp_new = None
    stored = store.active_parts(job)
    same = [part for series, part in stored if series == setup.series_id]
    stale = [(series, part) for series, part in stored if series != setup.series_id]  # settings changed: a new series
    previous = pd.concat([read_part(p) for _, p in stored], ignore_index=True) if stored else None
    plan = plan_parts(digests, same, k=setup.k, min_new=min_new, next_seq=store.next_part_seq(job))
    added: list[tuple[str, Part]] = []
    if plan.new_members:
        positions = {key: i for i, key in enumerate(keys)}
        label = part_label(plan.next_seq, setup.series_id, plan.new_members, digests)
        at = [positions[key] for key in plan.new_members]
        # every case new and in the view's order (a first run): the view itself, not a copy of it
        rows = table if at == list(range(len(table))) else table.iloc[at]
        published, vp = protect_part_tables(rows, setup, label, schema)
        members = tuple((s, r, digests[(s, r)]) for s, r in plan.new_members)
        vp_bytes = None
        if vp is not None:
            owners = vp.pop(OWNER)
            vp_new = (vp, tuple(owners))
            vp_bytes = to_csv_bytes(vp)
        added.append((setup.series_id, Part(plan.next_seq, label, members, to_csv_bytes(published), len(published), vp_bytes)))
        del published, rows  # the part is its bytes from here on (read back below, as stored parts are)
    frames = [read_part(p) for p in plan.keep] + [read_part(p) for _, p in added]
    retired = [(setup.series_id, p.seq) for p in plan.retire]
    if added:  # a new series replaces the old one only once it has a part of its own
        retired += [(series, p.seq) for series, p in stale]
    composed = _compose(frames, setup)
    held = {"new": plan.held_new, "corrected_still_published": plan.held_changed, "deleted_still_published": plan.held_deleted}
    privacy = describe_release(composed, setup)
    vp_table = previous_vp = None
    if setup.with_vp:
        vp_columns = [*schema.vp_view, PART_COLUMN]
        vp_table = _compose_columns([f for f in (read_vp(p) for p in [*plan.keep, *(p for _, p in added)]) if f is not None], vp_columns)
        old_vp = [f for f in (read_vp(p) for _, p in stored) if f is not None]
        if old_vp:
            previous_vp = to_csv_bytes(_compose_columns(old_vp, vp_columns))
        finest = {f.columns[0]: (f.hierarchy, f.finest) for f in setup.facts if f.hierarchy is not None and f.name != PROFILE}
        privacy["victim_perpetrator"] = describe_vp(vp_table, finest, schema)
    return NextRelease(
        table=composed,
        privacy=privacy,
        previous_csv=to_csv_bytes(previous.where(previous != "", None)) if previous is not None else None,
        change=SeriesChange(job, tuple(added), tuple(retired)),
        plan=plan,
        held=held,
        vp_table=vp_table,
        previous_vp_csv=previous_vp,
        vp_new=vp_new,
    )


def _compose_columns(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    # column by column: a blank or missing cell is None. (Frame-wide reindex, concat, astype and two
    # where() calls made six copies of the release at once: the peak of a 300,000-case release.)
    out: dict[str, np.ndarray] = {}
    for c in columns:
        pieces = [f[c].to_numpy(dtype=object) if c in f.columns else np.full(len(f), None, dtype=object) for f in frames]
        column = np.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()
        column[pd.isna(column) | (column == "")] = None
        out[c] = column
    return pd.DataFrame(out, columns=columns)


def _compose(frames: list[pd.DataFrame], setup: KSetup) -> pd.DataFrame:
    return _compose_columns(frames, list(setup.columns))


__all__ = ["NextRelease", "next_k_release", "read_part", "row_digests", "PART_COLUMN"]
