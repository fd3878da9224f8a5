"""Benchmark: the connector's synthetic release vs pac-synth called directly (and smartnoise MST).

    python bench/synth.py                      # 100,000 generated cases, 12 columns, eps 1, 4, 12
    python bench/synth.py --cases 20000 --epsilons 4 --skip-mst

Each run happens in a child process so the peak memory (max RSS, which includes pac-synth's Rust
allocations) is the run's own. Utility is measured with privacy.metrics against the real data in
each output's own representation (the connector bins age and generalizes quasi-identifiers to reach
the resolution; pac-synth direct and MST see the raw columns), so errors are comparable in kind,
not cell for cell; the table says which.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workers import WorkerDied, result_of  # noqa: E402

COLUMNS = ["yearOfRegistration", "gender", "ageBroad", "majorityStatus", "citizenship", "CountryOfExploitation",
           "isForcedLabour", "isSexualExploit", "isOtherExploit", "meansOfControlDebtBondage",
           "meansOfControlPhysicalAbuse", "meansOfControlThreats"]


def make_view(n: int):
    import pandas as pd

    from connector.sandbox.generate import expected_fields, generate_cases
    from connector.schema import load_schema
    from privacy.view import derive_release_view

    cases = [c for c in generate_cases(n, seed=42) if not c.deleted]
    return derive_release_view(pd.DataFrame([expected_fields(c) for c in cases]), load_schema(), datasource="bench", columns=COLUMNS)


def run_one(method: str, n: int, epsilon: float, queue) -> None:
    from connector.config import SynthConfig
    from connector.schema import load_schema
    from privacy.hierarchies import hierarchy_for
    from privacy.metrics import as_strings, compare

    view = make_view(n)
    schema = load_schema()
    qis = [c for c in COLUMNS if schema.view[c].role == "quasi_identifier"]
    started = time.perf_counter()
    if method == "connector":
        from privacy.synth import synthesize

        hierarchies = {q: hierarchy_for(q, None, schema.view[q].hierarchy) for q in qis}
        result = synthesize(view, SynthConfig(epsilon=epsilon, budget=max(epsilon, 12)), quasi_identifiers=qis, hierarchies=hierarchies,
                            rules={c.name: c.rule for c in schema.view.values()})
        out, basis = result.table, result.basis
    elif method == "pac-synth direct":
        import pacsynth
        import pandas as pd

        basis = as_strings(view)
        synthesizer = pacsynth.DpAggregateSeededSynthesizer(pacsynth.DpAggregateSeededParametersBuilder().epsilon(epsilon).build())
        synthesizer.fit(pacsynth.Dataset.from_data_frame(basis))
        raw = synthesizer.sample()
        out = pd.DataFrame(raw[1:], columns=raw[0])
    else:  # smartnoise MST
        from snsynth import Synthesizer

        basis = as_strings(view)
        synth = Synthesizer.create("mst", epsilon=epsilon, verbose=False)
        out = synth.fit_sample(basis, preprocessor_eps=0.0, categorical_columns=list(basis.columns))
    seconds = time.perf_counter() - started
    metrics = compare(basis, out, reporting_length=3, quasi_identifiers=qis, threshold=10)
    by_length = metrics["combinations"]["by_length"]
    queue.put({
        "method": method, "epsilon": epsilon, "seconds": seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": len(out),
        "mre": [row["mean_relative_error"] for row in by_length],
        "fabricated": [row["fabricated"] for row in by_length],
        "tvd_pairs": metrics["distances"]["pair_mean"],
        "smallest_class": metrics["risk"]["smallest_class"],
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--epsilons", default="1,4,12")
    parser.add_argument("--skip-mst", action="store_true", help="do not try smartnoise-synth's MST")
    args = parser.parse_args()
    methods = ["connector", "pac-synth direct"]
    if not args.skip_mst:
        try:
            import snsynth  # noqa: F401

            methods.append("smartnoise MST")
        except ImportError:
            print("smartnoise-synth is not installed: MST skipped (pip install smartnoise-synth)")
    context = mp.get_context("spawn")
    print(f"{args.cases} generated cases, {len(COLUMNS)} columns, reporting length 3")
    print(f"{'method':18} {'eps':>4} {'time s':>7} {'peak MB':>8} {'rows':>7} {'MRE 1/2/3-way':>20} {'fabricated 1/2/3':>18} {'pair TVD':>8} {'min class':>9}")
    for epsilon in [float(e) for e in args.epsilons.split(",")]:
        for method in methods:
            queue = context.Queue()
            child = context.Process(target=run_one, args=(method, args.cases, epsilon, queue))
            child.start()
            try:
                r = result_of(queue, child, f"{method} at eps {epsilon:g}", timeout=7200)
            except WorkerDied as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            child.join()
            mre = "/".join(f"{x:.3f}" for x in r["mre"])
            fab = "/".join(str(x) for x in r["fabricated"])
            print(f"{r['method']:18} {epsilon:>4g} {r['seconds']:>7.1f} {r['peak_mb']:>8.0f} {r['rows']:>7} {mre:>20} {fab:>18} {r['tvd_pairs']:>8.3f} {r['smallest_class']:>9}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
