"""Benchmark: the full-row guarantee with local suppression against the alternatives, same cases, k=10.

Why: the guarantee a release makes is "every published row, read across ALL its columns, occurs at
least k times" (the attacker knows everything about the victim). This puts the ways of reaching it
side by side on the same generated cases, with what the central team cares about:

- **full-row, local suppression (ours)**: `privacy.protect.protect` (`privacy.kanon_full`: facts
  specialized top down in importance order, each row at its own level, `*` where needed);
- **full-domain generalization, every column (CTDC-style)**: `privacy.kanon.anonymize`, the exact
  lattice search, given every fact as a quasi-identifier (a multi-column fact as one column with
  the flat hierarchy value -> `*`), records of classes below k withheld, at most 5 %;
- **anjana 1.2.3, every column**: the same input to anjana's k-anonymity (bench extra; skipped if
  missing or with `--skip-anjana`);
- **synthetic, epsilon 4**: `method: synthetic` on the README's twelve columns (no real row is
  published, so "cells kept" does not apply; year/country "full" = not binned).

Columns measured: facts kept (share of the input's facts, one per row and fact, published as
recorded, at least as fine as the fact's finest published level: CTDC age bands; a multi-column
fact such as the means of control counts once, as it is shown or hidden whole), cells kept (the
same over every column, so a fact of 18 flag columns weighs 18 times), rows kept, rows with BOTH year of
registration and country of exploitation at full detail, seconds and peak MB (each method in a
forked child, like bench/kanon.py). Every k-anonymized output is re-checked on whole rows.

    .venv/bin/python bench/privacy.py                        # 2,000 and 100,000 cases
    .venv/bin/python bench/privacy.py --rows 2000 --skip-anjana --skip-synthetic
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kanon import _in_child  # noqa: E402

from connector.config import ReleaseConfig  # noqa: E402
from connector.schema import load_schema  # noqa: E402
from privacy.facts import plan_facts  # noqa: E402
from privacy.hierarchies import TOP, flat_hierarchy, is_label, load_builtin  # noqa: E402

K = 10
LIMIT = 0.05
SCHEMA = load_schema()
ROLES = SCHEMA.view_roles()
RULES = {c.name: c.rule for c in SCHEMA.view.values()}
NAMES = {c.name: c.hierarchy for c in SCHEMA.view.values() if c.hierarchy}
SYNTH_COLUMNS = ["yearOfRegistration", "gender", "ageBroad", "citizenship", "CountryOfExploitation", "isForcedLabour", "isSexualExploit",
                 "isOtherExploit", "meansOfControlDebtBondage", "meansOfControlThreats", "meansOfControlWithholdsDocuments", "typeOfLabourDomesticWork"]


def release_view(rows: int, seed: int = 7) -> pd.DataFrame:
    from connector.sandbox.generate import expected_fields, generate_cases
    from privacy.view import derive_release_view

    fields = pd.DataFrame([expected_fields(case) for case in generate_cases(rows, seed=seed)])
    view = derive_release_view(fields, SCHEMA, datasource="Case Management")
    return view.drop(columns=["releasePart"]).reset_index(drop=True)


def facts_of(view: pd.DataFrame) -> list:
    hierarchies = {c: load_builtin(NAMES[c]) for c in view.columns if c in NAMES}
    return plan_facts(list(view.columns), rules=RULES, roles=ROLES, hierarchies=hierarchies)


def strings(series: pd.Series) -> pd.Series:
    from privacy.kanon_full import cell_strings

    return pd.Series(cell_strings(series), index=series.index).fillna("")


def measure(view: pd.DataFrame, published: pd.DataFrame, kept_rows: np.ndarray) -> dict[str, Any]:
    """Cells and rows kept against the input; `kept_rows` maps published rows to input rows."""
    facts = facts_of(view)
    n = len(view)
    cells = full_cells = full_facts = 0
    for fact in facts:
        column = fact.columns[0]
        out = published[column].fillna("").astype(str).to_numpy()
        if fact.hierarchy is not None:
            ok = np.array([v != TOP and any(is_label(fact.hierarchy, v, lv) for lv in range(0, fact.finest + 1)) if v else True for v in out])
        else:
            ok = out != TOP  # a fact is shown or hidden in all its columns at once
        full_facts += int(ok.sum())
        full_cells += int(ok.sum()) * len(fact.columns)
        cells += n * len(fact.columns)
    year = published["yearOfRegistration"].fillna("").astype(str)
    country = published["CountryOfExploitation"].fillna("").astype(str)
    year_full = year.str.fullmatch(r"\d{4}") | (year == "")
    country_full = country.str.fullmatch(r"[A-Z]{2}") | (country == "")
    counts = Counter(map(tuple, published.fillna("").astype(str).to_numpy()))
    return {"facts_kept": full_facts / (n * len(facts)), "cells_kept": full_cells / cells, "rows_kept": len(published) / n, "year_country_full": float((year_full & country_full).sum()) / n,
            "smallest_group": min(counts.values()) if counts else 0, "rows_in": n, "rows_out": len(published), "kept_rows": len(kept_rows)}


def run_ours(view: pd.DataFrame) -> dict[str, Any]:
    from privacy.protect import protect

    result = protect(view, ReleaseConfig(k=K), ROLES, hierarchy_names=NAMES, rules=RULES)
    return measure(view, result.table.drop(columns=["releasePart"]), np.arange(len(view)))


def fact_table(view: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """One column per fact (a multi-column fact's values joined), with its hierarchy."""
    facts = facts_of(view)
    table, hierarchies = {}, {}
    for fact in facts:
        if fact.hierarchy is not None:
            table[fact.name] = view[fact.name]
            hierarchies[fact.name] = fact.hierarchy
        else:
            joined = pd.concat([strings(view[c]) for c in fact.columns], axis=1).agg("|".join, axis=1)
            table[fact.name] = joined
            hierarchies[fact.name] = flat_hierarchy()
    return pd.DataFrame(table), hierarchies


def expand(view: pd.DataFrame, generalized: pd.DataFrame, kept: np.ndarray) -> pd.DataFrame:
    """Per-column published cells from a fact table: a `*` fact is `*` in all its columns."""
    out = {}
    for fact in facts_of(view):
        if fact.hierarchy is not None:
            out[fact.name] = generalized[fact.name].astype(object).to_numpy()
            continue
        star = (generalized[fact.name].astype(str) == TOP).to_numpy()
        for column in fact.columns:
            out[column] = np.where(star, TOP, strings(view[column]).to_numpy()[kept])
    return pd.DataFrame(out)


def run_lattice(view: pd.DataFrame) -> dict[str, Any]:
    from privacy.kanon import anonymize

    table, hierarchies = fact_table(view)
    table = table.reset_index(drop=True)
    table["_row"] = np.arange(len(table))
    result = anonymize(table, [c for c in table.columns if c != "_row"], hierarchies, k=K, suppression_limit=LIMIT, metric="loss")
    kept = result.table["_row"].to_numpy()
    return {**measure(view, expand(view, result.table, kept), kept), "levels": result.record["levels"]}


def run_anjana(view: pd.DataFrame) -> dict[str, Any]:
    from anjana.anonymity._k_anonymity import k_anonymity_inner

    table, hierarchies = fact_table(view)
    data = pd.DataFrame({c: strings(table[c]).replace("", "NA").astype(object) for c in table.columns})
    data["_row"] = np.arange(len(data))
    tables = {}
    for column, h in hierarchies.items():
        values = sorted(data[column].unique())
        tables[column] = {lv: np.array([("*" if lv == h.height else "NA") if v == "NA" else (h.path(v, column)[lv] if h.paths is not None or h._interval else (v if lv == 0 else "*")) for v in values], dtype=object)
                          for lv in range(h.height + 1)}
    qis = list(hierarchies)
    with contextlib.redirect_stdout(io.StringIO()):
        out, _suppressed, levels = k_anonymity_inner(data, [], qis, K, LIMIT * 100, tables)
    kept = out["_row"].to_numpy().astype(int)
    generalized = out[qis].replace("NA", "").reset_index(drop=True)
    return {**measure(view, expand(view, generalized, kept), kept), "levels": {q: int(levels[q]) for q in qis}}


def run_synthetic(view: pd.DataFrame) -> dict[str, Any]:
    from privacy.protect import protect

    config = ReleaseConfig.model_validate({"method": "synthetic", "columns": SYNTH_COLUMNS, "synthetic": {"epsilon": 4}})
    result = protect(view, config, ROLES, hierarchy_names=NAMES, rules=RULES)
    table = result.table
    year = table["yearOfRegistration"].fillna("").astype(str)
    country = table["CountryOfExploitation"].fillna("").astype(str)
    both = (year.str.fullmatch(r"\d{4}") | (year == "")) & (country.str.fullmatch(r"[A-Z]{2}") | (country == ""))
    return {"facts_kept": None, "cells_kept": None, "rows_kept": len(table) / len(view), "year_country_full": float(both.mean()) if len(table) else 0.0,
            "smallest_group": None, "rows_in": len(view), "rows_out": len(table)}


def markdown(rows: int, results: dict[str, dict[str, Any]]) -> str:
    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    lines = [f"{rows:,} generated cases, k={K}", "",
             "| method | facts kept | cells kept (every column) | rows kept | rows with year and country at full detail | smallest group (whole rows) | time (s) | peak MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | | | | | {r['seconds']:.1f} | {r['peak_mb']:.0f} |")
            continue
        lines.append(f"| {name} | {pct(r['facts_kept'])} | {pct(r['cells_kept'])} | {pct(r['rows_kept'])} | {pct(r['year_country_full'])} | "
                     f"{r['smallest_group'] if r['smallest_group'] is not None else 'n/a'} | {r['seconds']:.2f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines)


def bound(view: pd.DataFrame) -> float:
    """The most rows ANY method can publish with year and country both at full detail: a row
    needs k-1 others with its whole row, so at least its (year, country) cell must hold k."""
    sizes = view.groupby(["yearOfRegistration", "CountryOfExploitation"], dropna=False).size()
    return float(sizes[sizes >= K].sum()) / len(view)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000, 100_000], help="sizes (default 2000 100000)")
    parser.add_argument("--skip-anjana", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-lattice", action="store_true")
    args = parser.parse_args(argv)
    failed = False
    for rows in args.rows:
        start = time.perf_counter()
        view = release_view(rows)
        print(f"generated {rows:,} cases in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        results = {"full-row, local suppression (htcds-connector)": _in_child(lambda: run_ours(view))}
        if not args.skip_lattice:
            results["full-domain generalization, every column (lattice)"] = _in_child(lambda: run_lattice(view))
        if not args.skip_anjana:
            try:
                import anjana  # noqa: F401
            except ImportError:
                print("anjana is not installed (.venv/bin/pip install anjana==1.2.3); skipping it", file=sys.stderr)
            else:
                results["anjana 1.2.3, every column"] = _in_child(lambda: run_anjana(view))
        if not args.skip_synthetic:
            results["synthetic, epsilon 4 (12 columns)"] = _in_child(lambda: run_synthetic(view))
        print(markdown(rows, results))
        print(f"\nupper bound for rows with year and country at full detail at k={K}, any method: {100 * bound(view):.1f} %\n")
        failed |= any("error" in r for r in results.values())
        failed |= any((r.get("smallest_group") or K) < K for r in results.values() if "error" not in r)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
