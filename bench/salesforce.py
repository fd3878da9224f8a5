"""Benchmark: full pull of N generated cases with their related records from the Salesforce sandbox.

    .venv/bin/python bench/salesforce.py --rows 20000            # moderate size
    .venv/bin/python bench/salesforce.py                         # the promised 100,000 (slow)

Modes: `rest` (REST only, child subqueries), `rest-keyed` (REST, one query per child object by
Case Id IN chunks), `auto` (a COUNT() decides; Bulk API 2.0 above the threshold). For each: API
calls (every HTTP request the source made, login included), wall time, and the peak resident
memory of the pulling process. The sandbox runs in its own process and each mode pulls in a fresh
process, so one mode's memory does not hide in another's. Target: auto uses at most a tenth of
REST-only's calls, and memory stays flat as N grows (pages are streamed, never all held).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workers import WorkerDied, result_of  # noqa: E402


def _serve(rows: int, ready: Any, stop: Any) -> None:
    from connector.sandbox.generate import generate_cases
    from connector.sandbox.salesforce import start_sandbox

    started = time.perf_counter()
    handle = start_sandbox(generate_cases(rows, seed=1), daily_limit=10_000_000)
    ready.put({"options": handle.config_options(), "setup_seconds": round(time.perf_counter() - started, 1)})
    stop.get()
    handle.stop()


def _pull(mode: str, options: dict[str, Any], out: Any) -> None:
    from connector.config import SourceConfig
    from connector.sources.salesforce import SalesforceSource

    opts = {key: value for key, value in options.items() if key != "private_key_file"}
    opts["private_key"] = {"file": options["private_key_file"]}
    opts.update({"bulk_poll_seconds": 0.2, "lookback_seconds": 0})
    opts.update({"rest": {"api": "rest"}, "rest-keyed": {"api": "rest", "children": "keyed"}, "auto": {"api": "auto"}, "bulk": {"api": "bulk"}}[mode])
    source = SalesforceSource(SourceConfig(id="bench", type="salesforce", mapping="salesforce_htcds", options=opts), None)
    started = time.perf_counter()
    cases = children = pages = 0
    for page in source.pages(None):
        pages += 1
        for record in page.records:
            cases += 1
            children += sum(len(record.fields.get(k) or []) for k in ("perpetrators", "events", "support_plans"))
    wall = time.perf_counter() - started
    source.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put({"mode": mode, "cases": cases, "children": children, "pages": pages, "api_calls": source.stats.requests, "wall_s": round(wall, 1), "peak_rss_mb": round(peak_mb, 1), "bulk": source.stats.extra.get("bulk", 0)})


def run(rows: int, modes: list[str]) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    # A queue, not an Event, says stop: Event.set() waits for every waiter to wake, forever if one was killed.
    ready, stop = ctx.Queue(), ctx.Queue()
    server = ctx.Process(target=_serve, args=(rows, ready, stop), daemon=True)
    server.start()
    results = []
    try:
        info = result_of(ready, server, "sandbox", timeout=1800)
        for mode in modes:
            out = ctx.Queue()
            worker = ctx.Process(target=_pull, args=(mode, info["options"], out))
            worker.start()
            result = result_of(out, worker, f"pull {mode}", timeout=3600)
            worker.join()
            if not server.is_alive():
                raise WorkerDied(f"sandbox: the server process died (exit code {server.exitcode})")
            result["rows"] = rows
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        stop.put(None)
        server.join(timeout=30)
        if server.is_alive():
            server.kill()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="generated cases in the sandbox (default 100,000)")
    parser.add_argument("--modes", default="rest,rest-keyed,auto", help="comma-separated: rest, rest-keyed, auto, bulk")
    args = parser.parse_args()
    try:
        results = run(args.rows, args.modes.split(","))
    except WorkerDied as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    by_mode = {r["mode"]: r for r in results}
    if "rest" in by_mode and "auto" in by_mode:
        ratio = by_mode["auto"]["api_calls"] / max(1, by_mode["rest"]["api_calls"])
        print(f"auto / rest API calls: {ratio:.3f} (target <= 0.1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
