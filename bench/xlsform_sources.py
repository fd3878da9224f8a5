"""Benchmark: pull N submissions from the ODK Central and Kobo sandboxes through the real sources.

Reports, per server and size: HTTP requests made, wall time, records per second and the peak
memory the *source* allocates (tracemalloc in the pulling process; the sandbox runs in its own
process so its copy of the data is not counted). Two sizes (N/4 and N) show that memory stays
flat as the count grows: pages are streamed, never held.

    .venv/bin/python bench/xlsform_sources.py                 # 100,000 submissions (slow: minutes)
    .venv/bin/python bench/xlsform_sources.py --rows 20000    # a moderate run
    .venv/bin/python bench/xlsform_sources.py --rows 2000 --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.config import SourceConfig  # noqa: E402
from connector.secrets import fold_secret_references  # noqa: E402


def _serve(kind: str, rows: int, page_size: int, out: Any, stop: Any) -> None:
    """Child process: generate cases, serve them, report the url and credentials, wait for stop."""
    from connector.sandbox.generate import generate_cases

    cases = generate_cases(rows, seed=1)
    if kind == "odk":
        from connector.sandbox.odk_central import start_odk_sandbox

        handle = start_odk_sandbox(cases, page_size=page_size)
        out.put({"options": handle.config_options(password_env="BENCH_ODK_PASSWORD"), "secret": handle.password})
    else:
        from connector.sandbox.kobo import start_kobo_sandbox

        handle = start_kobo_sandbox(cases, page_size=page_size)
        out.put({"options": handle.config_options(token_env="BENCH_KOBO_TOKEN"), "secret": handle.token})
    del cases
    stop.wait()
    handle.stop()


def measure(kind: str, rows: int, page_size: int) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(kind, rows, page_size, queue, stop), daemon=True)
    server.start()
    try:
        info = queue.get(timeout=1800)
        if kind == "odk":
            from connector.sources.odk_central import OdkCentralSource as cls

            os.environ["BENCH_ODK_PASSWORD"] = info["secret"]
        else:
            from connector.sources.kobo import KoboSource as cls  # type: ignore[assignment]

            os.environ["BENCH_KOBO_TOKEN"] = info["secret"]
        raw = {**info["options"], "page_size": page_size}
        config = SourceConfig(id=f"bench-{kind}", type=cls.type_name, mapping="xlsform_htcds", options=raw)
        config.parsed_options = cls.Options.model_validate(fold_secret_references(raw, Path(".")))
        source = cls(config, None)
        tracemalloc.start()
        started = time.perf_counter()
        count = pages = 0
        for page in source.pages(None):
            count += len(page.records)
            pages += 1
        wall = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        source.close()
        return {
            "server": kind,
            "rows": rows,
            "records": count,
            "pages": pages,
            "requests": source.stats.requests,
            "wall_s": round(wall, 2),
            "records_per_s": round(count / wall) if wall else None,
            "peak_mib": round(peak / 2**20, 2),
        }
    finally:
        stop.set()
        server.join(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="submissions at the larger size (default 100000); the smaller is a quarter")
    parser.add_argument("--page-size", type=int, default=1000, help="records per request ($top / limit)")
    parser.add_argument("--servers", default="odk,kobo", help="comma-separated: odk, kobo")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args(argv)
    results = []
    for kind in args.servers.split(","):
        for rows in (max(1, args.rows // 4), args.rows):
            result = measure(kind.strip(), rows, args.page_size)
            results.append(result)
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                print(
                    f"{result['server']:5} rows={result['rows']:>7} records={result['records']:>7} requests={result['requests']:>5} "
                    f"wall={result['wall_s']:>7}s rate={result['records_per_s']:>6}/s peak={result['peak_mib']:>6} MiB",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
