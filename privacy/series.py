"""A series of k-anonymized releases that is safe to subtract: frozen parts, and the difference check.

The attack: a job that runs every night republishes its cases; `diff` of two releases is exactly
the rows that came and went in between, and one new case is one new row. So a release is the union
of frozen *parts*. Each part is protected on its own (every published row occurs >= k times inside
the part), carries its label in the `releasePart` column and is republished byte for byte until it
is retired whole. The rows added between any two releases are whole new parts and the rows removed
are whole retired parts, and each part meets the guarantee on its own; `check_series` is the
independent check the gate (and the central receiver) runs on the bytes of consecutive releases.

What waits ("held", counted in `status` and `preview`, never in published files):
- new records, until at least `min_new` of them (and at least k) can form a part;
- a correction or a deletion of a published record: its part is retired whole and its other
  records join the next new part with the pending ones. A part with a deletion is retired at the
  next release even when no new part can be formed yet, so a deleted case leaves the release
  promptly (removing a whole part removes >= k alike rows at once).
Changing the protection settings starts a new series: every old part is retired.

What this does not hide (README, Known limits): someone who drops the part column and compares a
retired part with the part that later republishes its other cases can see that a group of at least
k alike rows lost a member, not which member.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

PART_COLUMN = "releasePart"
PART_LABEL = re.compile(r"^[0-9]{1,9}(-[0-9a-f]{8})?$")

Key = tuple[str, str]  # (source, record id)


@dataclass(frozen=True)
class Part:
    """A frozen part: its sequence number and label, the records it holds (with the digest of their
    view row when it was published) and its published rows as CSV bytes (part column included)."""

    seq: int
    label: str
    members: tuple[tuple[str, str, str], ...]  # (source, record_id, digest)
    data_csv: bytes
    rows: int
    vp_csv: bytes | None = None  # its victim-perpetrator rows, when the series publishes them


def part_label(seq: int, series: str, members: Sequence[Key], digests: Mapping[Key, str]) -> str:
    """`<seq>-<hash>`: the hash covers the series and every member's digest, so two parts with
    different content never share a label, not even after a crash between publishing a part and
    recording it (rows of equal labels could cancel out in a difference of two releases)."""
    h = hashlib.sha256(series.encode())
    for key in members:
        h.update(f"\0{key[0]}\0{key[1]}\0{digests[key]}".encode())
    return f"{seq}-{h.hexdigest()[:8]}"


@dataclass
class Plan:
    """What the next release does: parts kept, parts retired, the records of the new part (if any)."""

    keep: list[Part] = field(default_factory=list)
    retire: list[Part] = field(default_factory=list)
    new_members: list[Key] = field(default_factory=list)
    next_seq: int = 1
    held_new: int = 0  # new records waiting for a part
    held_changed: int = 0  # corrected records still published in their old version
    held_deleted: int = 0  # deleted records still published (their part waits to be retired)

    @property
    def changes(self) -> bool:
        return bool(self.retire or self.new_members)


def plan_parts(current: Mapping[Key, str], active: Sequence[Part], *, k: int, min_new: int, next_seq: int) -> Plan:
    """Decide the next release from the live records (key -> digest of its view row) and the parts
    of the current series (see the module docstring). `next_seq` is one more than any part the
    job ever had, retired ones included: labels are never reused."""
    published: set[Key] = set()
    dirty: list[Part] = []
    with_deletion: list[Part] = []
    for part in active:
        members = [((s, r), d) for s, r, d in part.members]
        published.update(key for key, _ in members)
        if any(current.get(key) != digest for key, digest in members):
            dirty.append(part)
        if any(key not in current for key, _ in members):
            with_deletion.append(part)
    new = [key for key in current if key not in published]
    survivors = {(s, r) for part in dirty for s, r, _ in part.members if (s, r) in current}
    pool = sorted(set(new) | survivors)
    floor = k if not active else max(k, min_new)
    retire, members = ([], [])
    if len(pool) >= floor and pool:
        retire, members = dirty, pool
    elif with_deletion:
        retire = with_deletion
        if len(retire) == len(active) and len(pool) >= k:  # nothing else would stay out: a first part again
            retire, members = dirty, pool
    gone = {p.seq for p in retire}
    keep = [p for p in active if p.seq not in gone]
    out = {(s, r) for p in keep for s, r, _ in p.members} | set(members)
    return Plan(
        keep=keep, retire=list(retire), new_members=list(members), next_seq=next_seq,
        held_new=sum(1 for key in current if key not in out),
        held_changed=sum(1 for p in keep for s, r, d in p.members if (s, r) in current and current[(s, r)] != d),
        held_deleted=sum(1 for p in keep for s, r, _ in p.members if (s, r) not in current),
    )


def row_counts(rows: Iterable[Sequence[str]]) -> Counter:
    return Counter(tuple(row) for row in rows)


def check_series(previous_header: Sequence[str] | None, previous_rows: Iterable[Sequence[str]], header: Sequence[str], rows: Iterable[Sequence[str]], k: int,
                 previous_k: int | None = None) -> list[str]:
    """Reasons the step from an earlier release to this one would single someone out (empty if
    none): the rows added, and the rows removed, each a multiset of whole published rows (the part
    label is a column of every row), must each hold every row they hold at least k times -- the
    added ones this release's k, the removed ones the k they were published under (`previous_k`,
    default k: raising k must not strand a series). Counts only, never values."""
    if previous_header is None:
        return []
    before, after = row_counts(previous_rows), row_counts(rows)
    k_removed = previous_k if previous_k is not None else k
    if list(previous_header) != list(header):
        # a new column set: nothing of the old release can be matched row by row, so every old row
        # is removed and every new row added; each must stand on its own
        return _rare("removed", before, k_removed) + _rare("added", after, k)
    return _rare("added", after - before, k) + _rare("removed", before - after, k_removed)


def _rare(what: str, counts: Counter, k: int) -> list[str]:
    rare = [n for n in counts.values() if n < k]
    if not rare:
        return []
    return [
        f"the rows {what} since the previous release include {len(rare)} row(s) that occur fewer than k={k} times among them "
        f"({sum(rare)} rows): comparing the two releases would single those cases out"
    ]


__all__ = ["PART_COLUMN", "PART_LABEL", "Part", "Plan", "check_series", "part_label", "plan_parts", "row_counts"]
