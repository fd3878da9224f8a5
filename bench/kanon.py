"""Benchmark: our optimal k-anonymity search against anjana 1.2.3, same data, same hierarchies.

Why: we promise partners a k-anonymous release of 100,000 cases in seconds on a small machine, and
claim the least information loss of any full-domain generalization (ARX's notion of optimal). This
puts both claims next to a published tool on one table.

Data: `connector.sandbox.generate.generate_cases` (realistic joint distributions: corridors,
age/gender by exploitation type) -> `expected_fields` (the mapped truth) -> the release view
(`privacy.view.derive_release_view`). Quasi-identifiers: age, gender, citizenship, country of
exploitation, year of registration; k=10; suppression limit 5 %. (`majorityStatus`, also a
quasi-identifier of the view but a function of age, is left out so both tools get the same five.)

Each tool runs in a forked child process so its peak memory is its own: "peak MB" is the child's
peak resident set minus its resident set at start (the shared input table is not counted).
Information loss for anjana is our metric evaluated at the levels anjana chose, with the records
anjana removed; both results are checked k-anonymous with pycanon. NA is a value of its own in both
(anjana gets it as the string "NA" and hierarchies mapping "NA" to itself below `*`).

    .venv/bin/pip install anjana==1.2.3       # bench-only dependency
    .venv/bin/python bench/kanon.py            # 100,000 rows (anjana takes ~4-5 minutes)
    .venv/bin/python bench/kanon.py --rows 10000 --skip-anjana
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import resource
import sys
import time
from typing import Any, Callable

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from privacy.hierarchies import Hierarchy, load_builtin  # noqa: E402
from privacy.kanon import anonymize  # noqa: E402

QIS = ["ageBroad", "gender", "citizenship", "CountryOfExploitation", "yearOfRegistration"]
HIERARCHY_NAMES = {"ageBroad": "age", "gender": "gender", "citizenship": "country", "CountryOfExploitation": "country", "yearOfRegistration": "year"}
K = 10
LIMIT = 0.05


def release_view(rows: int, seed: int = 7) -> pd.DataFrame:
    """The release view of `rows` generated cases, without majorityStatus (see the docstring)."""
    from connector.sandbox.generate import expected_fields, generate_cases
    from connector.schema import load_schema
    from privacy.view import derive_release_view

    cases = generate_cases(rows, seed=seed)
    fields = pd.DataFrame([expected_fields(case) for case in cases])
    view = derive_release_view(fields, load_schema(), datasource="Case Management")
    return view.drop(columns=["majorityStatus"]).reset_index(drop=True)


def hierarchies() -> dict[str, Hierarchy]:
    return {q: load_builtin(name) for q, name in HIERARCHY_NAMES.items()}


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _in_child(target: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `target` in a forked child; return its result with seconds and peak MB."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def run() -> None:
        start_rss = _rss_mb()
        start = time.perf_counter()
        try:
            out = target()
        except Exception as exc:  # report, do not hang the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        out["seconds"] = time.perf_counter() - start
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start_rss
        child.send(out)

    process = ctx.Process(target=run)
    process.start()
    result = parent.recv()
    process.join()
    return result


def run_ours(view: pd.DataFrame) -> dict[str, Any]:
    result = anonymize(view, QIS, hierarchies(), k=K, suppression_limit=LIMIT, metric="loss")
    rec = result.record
    return {"levels": rec["levels"], "suppressed": rec["records_suppressed"], "loss": rec["information_loss"],
            "nodes": rec["lattice_nodes_evaluated"], "k_check": _k(result.table)}


def anjana_inputs(view: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[int, np.ndarray]]]:
    """The QI columns as strings ("NA" for NA) and anjana's hierarchy tables built from ours."""
    data = pd.DataFrame({q: view[q].astype("string").fillna("NA").astype(object) for q in QIS})
    for column in view.columns:
        if column not in QIS:
            data[column] = view[column]
    tables = {}
    for q, h in hierarchies().items():
        values = sorted(data[q].unique())
        levels = {}
        for level in range(h.height + 1):
            labels = [("*" if level == h.height else "NA") if v == "NA" else h.path(v, q)[level] for v in values]
            levels[level] = np.array(labels, dtype=object)
        tables[q] = levels
    return data, tables


def run_anjana(view: pd.DataFrame) -> dict[str, Any]:
    from anjana.anonymity._k_anonymity import k_anonymity_inner

    data, tables = anjana_inputs(view)
    with contextlib.redirect_stdout(io.StringIO()):
        out, suppressed, levels = k_anonymity_inner(data, [], QIS, K, LIMIT * 100, tables)
    levels = {q: int(levels[q]) for q in QIS}
    # our metrics at anjana's node, removing the records in classes < k as anjana does
    ours_there = anonymize(view, QIS, hierarchies(), k=K, suppression_limit=1.0, search="fixed", levels=levels)
    assert ours_there.record["records_suppressed"] == suppressed, (ours_there.record["records_suppressed"], suppressed)
    return {"levels": levels, "suppressed": int(suppressed), "loss": ours_there.record["information_loss"],
            "nodes": None, "k_check": _k(out[QIS]) if len(out) else 0}


def _k(table: pd.DataFrame) -> int:
    import pycanon.anonymity

    frame = table[QIS].astype("string").fillna("NA").reset_index(drop=True)
    return int(pycanon.anonymity.k_anonymity(frame, QIS))


def markdown(rows: int, results: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"k={K}, suppression limit {LIMIT:.0%}, {rows:,} rows, QIs: {', '.join(QIS)}",
        "",
        "| tool | time (s) | peak MB | suppressed | loss (NCP) | discernibility | non-uniform entropy | levels (age, gender, cit, coe, year) | nodes evaluated | k (pycanon) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for tool, r in results.items():
        if "error" in r:
            lines.append(f"| {tool} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | error: {r['error']} | | | | | | |")
            continue
        lv = ", ".join(str(r["levels"][q]) for q in QIS)
        nodes = "" if r["nodes"] is None else str(r["nodes"])
        loss = r["loss"]
        lines.append(
            f"| {tool} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | {r['suppressed']:,} | {loss['loss']:.4f} | "
            f"{loss['discernibility']:.3e} | {loss['entropy']:.4e} | {lv} | {nodes} | {r['k_check']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of generated release view (default 100000)")
    parser.add_argument("--skip-anjana", action="store_true", help="run only our search")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    view = release_view(args.rows)
    print(f"generated {len(view):,} rows in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    results = {"htcds-connector (optimal, Flash-style)": _in_child(lambda: run_ours(view))}
    if not args.skip_anjana:
        try:
            import anjana  # noqa: F401
        except ImportError:
            print("anjana is not installed (.venv/bin/pip install anjana==1.2.3); skipping it", file=sys.stderr)
        else:
            results["anjana 1.2.3 (greedy)"] = _in_child(lambda: run_anjana(view))
    print(markdown(len(view), results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
