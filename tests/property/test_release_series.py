"""A series of k-anonymized releases, attacked the way the attacker who matters would attack it.

The attacker is the victim's trafficker: they know everything a release could show about the
victim (when and where, how they were recruited, controlled and exploited), and they keep every
release the partner ever published. The tests play that attacker against a real pipeline (the
SQLite store, the release step, the folder destination) over random series of inserts, edits and
deletes, and check every release and every difference between two releases with counters written
here, independently of `privacy/`, and with pycanon on the whole rows.

`SERIES_EXAMPLES=40` runs more random series than the default.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections import Counter
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import load_config
from connector.pipeline import Pipeline
from connector.sandbox.generate import expected_fields, generate_cases
from privacy.hierarchies import load_builtin
from privacy.kanon_full import cell_strings
from tests.store_job import store_cases, write_job

EXAMPLES = int(os.environ.get("SERIES_EXAMPLES", "6"))
POOL = [expected_fields(case) for case in generate_cases(260, seed=3, mess_rate=0.05)]
IGNORED = {"releasePart", "Datasource"}  # the attacker does not know a part; Datasource is the partner's


def job(tmp_path: Path, k: int, part_min: int) -> Path:
    return write_job(tmp_path, "series-ngo", f"release: {{method: k_anonymity, k: {k}, part_min_records: {part_min}}}")


class Partner:
    """A partner's store and release step; cases are written to the store as a sync would."""

    def __init__(self, tmp_path: Path, k: int, part_min: int):
        self.pipeline = Pipeline(load_config(job(tmp_path, k, part_min)))
        self.k = k
        self.live: dict[str, dict] = {}
        self.releases: list[bytes] = []  # data.csv of every release published, in order

    def write(self, upserts: dict[str, dict], deletes: set[str]) -> None:
        store_cases(self.pipeline.store, "series-ngo", upserts, deletes)
        self.live.update(upserts)
        for rid in deletes:
            self.live.pop(rid, None)

    def release(self):
        report = self.pipeline.release()
        if report.location:  # published now, or the same bytes as an earlier release (same id)
            self.releases.append((Path(report.location) / "data.csv").read_bytes())
        return report

    def truth(self) -> list[dict[str, str]]:
        """Every live victim's true release-view row, as the attacker knows it."""
        _, view = self.pipeline._keyed_view()
        cells = {c: cell_strings(view[c]) for c in view.columns}
        return [{c: (cells[c][i] or "") for c in view.columns} for i in range(len(view))]

    def close(self) -> None:
        self.pipeline.close()


def rows_of(data: bytes) -> tuple[list[str], list[tuple[str, ...]]]:
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    header = next(reader)
    return header, [tuple(row) for row in reader]


def rare(counts: Counter, k: int) -> list[int]:
    return [n for n in counts.values() if 0 < n < k]


def compatible(header: list[str], row: tuple[str, ...], truth: dict[str, str], hierarchies: dict) -> bool:
    """Whether a published row could be the victim's: every cell is `*`, or the true value, or a
    generalization of it along the column's hierarchy."""
    for column, cell in zip(header, row):
        if column in IGNORED or cell == "*":
            continue
        true = truth.get(column, "")
        if column in hierarchies and true != "":
            if cell not in hierarchies[column].path(true):
                return False
        elif cell != true:
            return False
    return True


HIERARCHIES = {"yearOfRegistration": load_builtin("year"), "gender": load_builtin("gender"), "ageBroad": load_builtin("age"),
               "majorityStatus": load_builtin("majority"), "citizenship": load_builtin("country"), "CountryOfExploitation": load_builtin("country")}


def attack(partner: Partner) -> list[str]:
    """Everything the trafficker can single out: (release or difference, size of the match)."""
    found = []
    truths = partner.truth()
    views = [("release", rows_of(data)) for data in partner.releases]
    for i in range(len(partner.releases)):
        for j in range(i + 1, len(partner.releases)):
            (header, before), (_, after) = rows_of(partner.releases[i]), rows_of(partner.releases[j])
            added, removed = Counter(after) - Counter(before), Counter(before) - Counter(after)
            views.append((f"added {i}->{j}", (header, list(added.elements()))))
            views.append((f"removed {i}->{j}", (header, list(removed.elements()))))
    for name, (header, rows) in views:
        for truth in truths:
            matches = sum(1 for row in rows if compatible(header, row, truth, HIERARCHIES))
            if 0 < matches < partner.k:
                found.append(f"{name}: {matches} candidate(s)")
    return found


STEP = st.one_of(
    st.tuples(st.just("insert"), st.integers(1, 40)),
    st.tuples(st.just("edit"), st.integers(1, 6)),
    st.tuples(st.just("delete"), st.integers(1, 6)),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(first=st.integers(20, 90), steps=st.lists(STEP, min_size=2, max_size=6), k=st.integers(3, 6), part_min=st.integers(6, 30), seed=st.integers(0, 10**6))
def test_every_release_and_every_difference_of_a_random_series_meets_k(tmp_path_factory, first, steps, k, part_min, seed):
    tmp_path = tmp_path_factory.mktemp("series")
    rng = random.Random(seed)
    partner = Partner(tmp_path, k, part_min)
    try:
        fresh = iter(range(len(POOL)))
        partner.write({f"c{i}": POOL[i] for i in (next(fresh) for _ in range(first))}, set())
        partner.release()
        for kind, n in steps:
            ids = sorted(partner.live)
            if kind == "insert":
                picks = [next(fresh, None) for _ in range(n)]
                partner.write({f"c{i}": POOL[i] for i in picks if i is not None}, set())
            elif kind == "edit" and ids:
                partner.write({rid: POOL[rng.randrange(len(POOL))] for rid in rng.sample(ids, min(n, len(ids)))}, set())
            elif kind == "delete" and ids:
                partner.write({}, set(rng.sample(ids, min(n, len(ids)))))
            partner.release()

        for data in partner.releases:
            header, rows = rows_of(data)
            assert rare(Counter(rows), k) == []
            from pycanon import anonymity

            frame = pd.DataFrame(rows, columns=header)
            assert anonymity.k_anonymity(frame, list(header)) >= k
        for i in range(len(partner.releases)):
            for j in range(i + 1, len(partner.releases)):
                before, after = Counter(rows_of(partner.releases[i])[1]), Counter(rows_of(partner.releases[j])[1])
                assert rare(after - before, k) == [] and rare(before - after, k) == [], (i, j)
        assert attack(partner) == []
        # every live victim is published or waits, counted, for a later part; deleted ones wait to leave
        published = len(rows_of(partner.releases[-1])[1]) if partner.releases else 0
        _, _, privacy = partner.pipeline.protected_view()
        held = privacy["held"]
        assert published == len(partner.live) - held["new"] + held["deleted_still_published"]
    finally:
        partner.close()


def test_five_cases_added_after_a_release_are_held_not_published(tmp_path):
    """`make demo` twice with five cases added between the runs: nothing singles them out."""
    partner = Partner(tmp_path, k=5, part_min=20)
    try:
        partner.write({f"c{i}": POOL[i] for i in range(120)}, set())
        first = partner.release()
        assert first.status == "published"
        partner.write({f"n{i}": POOL[200 + i] for i in range(5)}, set())
        again = partner.release()
        assert again.status == "unchanged" and again.release_id == first.release_id
        assert "5 new" in again.reasons[0]
        assert len(partner.releases) == 1
        _, _, privacy = partner.pipeline.protected_view()
        assert privacy["held"]["new"] == 5
        # enough new cases: they go out together as a part of their own, never one by one
        partner.write({f"n{i}": POOL[200 + i] for i in range(5, 25)}, set())
        third = partner.release()
        assert third.status == "published"
        header, before = rows_of(partner.releases[0])
        _, after = rows_of(partner.releases[1])
        added = Counter(after) - Counter(before)
        assert sum(added.values()) == 25 and rare(added, 5) == []
        assert Counter(before) - Counter(after) == Counter()
        assert attack(partner) == []
    finally:
        partner.close()


def test_a_deleted_case_leaves_with_its_whole_part(tmp_path):
    partner = Partner(tmp_path, k=4, part_min=30)
    try:
        partner.write({f"c{i}": POOL[i] for i in range(60)}, set())
        partner.release()
        partner.write({f"d{i}": POOL[100 + i] for i in range(40)}, set())
        partner.release()
        partner.write({f"e{i}": POOL[150 + i] for i in range(20)}, set())
        assert partner.release().status == "unchanged"  # 20 new: below part_min_records
        assert len(partner.releases) == 2
        partner.write({}, {"d3"})  # a deletion: its part is withdrawn whole, its other 39 cases join the 20 waiting
        third = partner.release()
        assert third.status == "published" and len(partner.releases) == 3
        (header, before), (_, after) = rows_of(partner.releases[1]), rows_of(partner.releases[2])
        removed, added = Counter(before) - Counter(after), Counter(after) - Counter(before)
        assert sum(removed.values()) == 40 and rare(removed, 4) == []
        assert sum(added.values()) == 59 and rare(added, 4) == []
        assert len({row[header.index("releasePart")] for row in added.elements()}) == 1  # one new part
        _, _, privacy = partner.pipeline.protected_view()
        assert privacy["held"] == {"new": 0, "corrected_still_published": 0, "deleted_still_published": 0}
        assert attack(partner) == []
    finally:
        partner.close()


def test_a_deletion_leaves_promptly_even_when_no_new_part_can_be_formed(tmp_path):
    partner = Partner(tmp_path, k=4, part_min=30)
    partner.write({f"c{i}": POOL[i] for i in range(60)}, set())
    partner.release()
    partner.write({f"d{i}": POOL[100 + i] for i in range(40)}, set())
    partner.release()
    partner.close()
    strict = Partner(tmp_path, k=4, part_min=100)  # the same store; new parts now need 100 cases
    strict.live, strict.releases = partner.live, partner.releases
    try:
        strict.write({}, {"d3"})
        third = strict.release()
        assert third.location is not None  # the release of the first part alone, as published before
        (_, before), (_, after) = rows_of(strict.releases[1]), rows_of(strict.releases[2])
        assert Counter(after) - Counter(before) == Counter()  # nothing added
        removed = Counter(before) - Counter(after)
        assert sum(removed.values()) == 40 and rare(removed, 4) == []
        _, _, privacy = strict.pipeline.protected_view()
        assert privacy["held"]["new"] == 39 and privacy["held"]["deleted_still_published"] == 0
        assert attack(strict) == []
    finally:
        strict.close()


def test_changing_or_deleting_a_held_case_changes_no_published_byte(tmp_path):
    """A record that is not published cannot move anything that is: not the data, not privacy.json,
    not the report, not the manifest."""
    partner = Partner(tmp_path, k=5, part_min=50)
    try:
        partner.write({f"c{i}": POOL[i] for i in range(100)}, set())
        first = partner.release()
        folder = Path(first.location)
        published = {p.name: p.read_bytes() for p in folder.iterdir()}
        partner.write({f"h{i}": POOL[150 + i] for i in range(10)}, set())
        assert partner.release().release_id == first.release_id
        partner.write({"h1": {**POOL[151], "prs_Gender": "Masculine" if POOL[151].get("prs_Gender") != "Masculine" else "Feminine"}}, {"h2"})
        again = partner.release()
        assert again.release_id == first.release_id and again.status == "unchanged"
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == published
        assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
        _, table, privacy = partner.pipeline.protected_view()
        assert privacy["held"]["new"] == 9
        keys = ("records_in", "records_suppressed", "information_loss")
        assert not any(key in json.loads(published["privacy.json"]) for key in keys)
    finally:
        partner.close()


def test_raising_k_starts_a_new_series_and_the_old_rows_leave_at_the_k_they_had(tmp_path):
    partner = Partner(tmp_path, k=4, part_min=20)
    partner.write({f"c{i}": POOL[i] for i in range(80)}, set())
    partner.release()
    partner.close()
    stricter = Partner(tmp_path, k=8, part_min=20)
    stricter.live, stricter.releases = partner.live, partner.releases
    try:
        report = stricter.release()
        assert report.status == "published", report.reasons
        (_, before), (_, after) = rows_of(stricter.releases[0]), rows_of(stricter.releases[1])
        assert rare(Counter(after), 8) == [] and not set(before) & set(after)
        assert rare(Counter(before) - Counter(after), 4) == []
    finally:
        stricter.close()


def test_a_night_with_nothing_changed_skips_the_release_without_reading_a_case(tmp_path, monkeypatch):
    from connector.store import Store

    partner = Partner(tmp_path, k=5, part_min=20)
    try:
        partner.write({f"c{i}": POOL[i] for i in range(60)}, set())
        first = partner.release()
        partner.write({f"c{i}": POOL[i] for i in range(60)}, set())  # the same cases read again: no change
        with monkeypatch.context() as patch:
            patch.setattr(Store, "snapshot", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read the cases")))
            again = partner.release()
        assert again.status == "unchanged" and again.release_id == first.release_id
        assert again.reasons == ["nothing changed since the last release"]
        partner.write({"c1": POOL[99]}, set())  # a correction: the release step runs again
        third = partner.release()
        assert third.status == "published" and third.release_id != first.release_id  # its part, re-protected
    finally:
        partner.close()
