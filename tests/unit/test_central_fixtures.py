"""Real release bundles for the destination and central-receiver tests.

Each bundle goes the production way: a small hand-made level-0 table -> `privacy.protect.protect`
(k over every published column, each row at its own level, down to each partner's finest level)
-> `privacy.gate.admit` -> `connector.release.build_bundle`. The two partners publish different
finest levels, and the merge keeps each row's own detail.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pandas as pd

from connector.release import Bundle, build_bundle
from connector.schema import load_schema
from privacy.gate import admit
from connector.config import ReleaseConfig
from privacy.protect import protect

QIS = ["yearOfRegistration", "gender", "ageBroad", "citizenship"]
HIERARCHIES = {"yearOfRegistration": "year", "gender": "gender", "ageBroad": "age", "citizenship": "country"}
# partner -> hierarchy levels. ngo-a keeps 2-year bands, 5-year age bands and countries;
# ngo-b publishes 5-year bands, CTDC age bands and UN M49 sub-regions.
LEVELS = {
    "ngo-a": {"yearOfRegistration": 1, "gender": 0, "ageBroad": 1, "citizenship": 0},
    "ngo-b": {"yearOfRegistration": 2, "gender": 0, "ageBroad": 2, "citizenship": 1},
}


def level0_table(partner: str, copies: int = 3) -> pd.DataFrame:
    """`copies` identical people per combination, so the fixed levels are k-anonymous for k=copies."""
    people = {
        "ngo-a": [(2020, "Female", 31, "UA"), (2021, "Female", 36, "UA"), (2022, "Male", 19, "MD"), (2023, "Male", 22, "MD")],
        "ngo-b": [(2021, "Female", 33, "RO"), (2022, "Female", 37, "BG"), (2024, "Male", 25, "UA"), (2020, "Female", 45, "PL")],
    }[partner]
    rows = []
    for i, (year, gender, age, country) in enumerate(people * copies):
        rows.append({"yearOfRegistration": year, "Datasource": "Case Management", "gender": gender, "ageBroad": age,
                     "citizenship": country, "meansOfControlDebtBondage": i % 2})
    frame = pd.DataFrame(rows)
    frame["meansOfControlDebtBondage"] = frame["meansOfControlDebtBondage"].astype("Int64")
    return frame


def protected(partner: str, k: int = 3, extra_columns: dict[str, list] | None = None, levels: dict[str, int] | None = None,
              part: str = "1") -> tuple[pd.DataFrame, dict]:
    """The partner's table protected as one release part labelled `part` (a later release of the
    same partner carries another label, as the connector's series does)."""
    schema = load_schema()
    table = level0_table(partner, copies=k)
    release = ReleaseConfig(k=k, levels=LEVELS[partner] if levels is None else levels)
    result = protect(table, release, schema.view_roles(), hierarchy_names=HIERARCHIES)
    out = result.table.assign(releasePart=part)
    for name, values in (extra_columns or {}).items():
        out[name] = values
    privacy = {**result.privacy, "parts": {part: len(out)}, "schema_version": schema.version}
    return out, privacy


def make_bundle(partner: str = "ngo-a", k: int = 3, roles_extra: dict[str, str] | None = None,
                extra_columns: dict[str, list] | None = None, levels: dict[str, int] | None = None, part: str = "1") -> Bundle:
    """A gate-admitted bundle; `extra_columns`/`roles_extra` let a test smuggle a column past a
    permissive gate (to test that the receiver's own gate refuses it)."""
    schema = load_schema()
    table, privacy = protected(partner, k, extra_columns, levels, part)
    roles = {**schema.view_roles(), **(roles_extra or {})}
    release = admit(table, privacy, roles=roles)
    return build_bundle(release, partner=partner, schema=schema, run_ids=["run-1"], created_at=datetime(2024, 5, 1, tzinfo=timezone.utc))


def tampered(bundle: Bundle, name: str, content: bytes, *, fix_manifest: bool = True) -> dict[str, bytes]:
    """The bundle's files with one file replaced; by default the manifest's checksum is updated so
    that only the deeper checks can catch it (the release id then no longer matches, unless the
    caller recomputes it with `rehash`)."""
    files = dict(bundle.files)
    files[name] = content
    if fix_manifest:
        manifest = json.loads(files["manifest.json"])
        manifest["files"][name] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
        files["manifest.json"] = json.dumps(manifest).encode()
    return files


def rehash(files: dict[str, bytes]) -> dict[str, bytes]:
    """Recompute the manifest's release id over the (tampered) content, as a forger would."""
    from connector.release import release_id_of

    manifest = json.loads(files["manifest.json"])
    manifest["release_id"] = release_id_of(files)
    return {**files, "manifest.json": json.dumps(manifest).encode()}


def test_fixture_bundles_are_k_anonymous_on_whole_rows_down_to_their_finest_levels() -> None:
    a, b = make_bundle("ngo-a"), make_bundle("ngo-b")
    privacy_a, privacy_b = json.loads(a.files["privacy.json"]), json.loads(b.files["privacy.json"])
    assert privacy_a["finest_levels"]["citizenship"] == LEVELS["ngo-a"]["citizenship"]
    assert privacy_b["finest_levels"]["ageBroad"] == LEVELS["ngo-b"]["ageBroad"]
    assert privacy_a["guarantee"] == "full_row" and privacy_a["smallest_group"] >= 3 and a.release_id != b.release_id
    assert b"30--34" in a.files["data.csv"] and b"30--38" in b.files["data.csv"]
