"""Benchmark: source to release, end to end, one source per job, as `htcds-connector run` does it.

    .venv/bin/python bench/e2e.py                                  # every source at 10,000 cases
    .venv/bin/python bench/e2e.py --sizes 10000,30000,100000       # the issue's three sizes (slow)
    .venv/bin/python bench/e2e.py --sizes 300000 --sources excel   # the memory target at 300,000 (< 2 GiB)
    .venv/bin/python bench/e2e.py --sources excel,kobo --json      # JSON lines as well as the table

For each source (excel, salesforce, odk_central, kobo) and size: a fresh job (SQLite store,
k-anonymity with k = 10, folder destination) runs twice, the first run and an unchanged re-run.
The sandbox (or the workbook writer) lives in its own process, and the connector runs as a child
process, `htcds-connector run CONFIG --json`, so the numbers are the connector's own: wall time
from start to exit, CPU seconds (user + system, from `os.wait4` of that child, its mapping worker
included) and its peak resident memory (`ru_maxrss`, or the sum over its process tree sampled
every 20 ms when that is larger); the sandbox's CPU seconds during the run are shown beside them
(from /proc), so a slow server is not mistaken for a slow connector. CPU seconds hardly depend on what else the machine runs; wall time
does, so say the load (`uptime`) next to any numbers you quote.

Any process that dies (a sandbox, the connector with an exit code above 1, or a run past
`--timeout`) stops the benchmark with a message and exit code 1; it never waits forever.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # appended: bench/privacy.py must not shadow the privacy package

from workers import WorkerDied, result_of  # noqa: E402

SOURCES = ("excel", "salesforce", "odk_central", "kobo")
MAPPINGS = {"excel": "excel_htcds", "salesforce": "salesforce_htcds", "odk_central": "xlsform_htcds", "kobo": "xlsform_htcds"}
SECRET_ENV = {"odk_central": "BENCH_ODK_PASSWORD", "kobo": "BENCH_KOBO_TOKEN"}
# The targets (#16), at 100,000 cases on a 2-core machine; smaller sizes must meet them too.
TARGET_FIRST_WALL_S = 60.0
TARGET_RERUN_WALL_S = 5.0
TARGET_PEAK_MIB = 1024.0
# Beyond 100,000 cases the issue sets only a memory target: < 2 GiB at 300,000 (its times are at 100,000).
LARGE_CASES = 100_000
TARGET_PEAK_MIB_LARGE = 2048.0


@dataclass
class Measured:
    source: str
    cases: int
    run: str  # "first" | "re-run"
    wall_s: float
    cpu_s: float
    peak_mib: float
    exit_code: int
    fetched: int
    sync_s: float
    release: str | None
    sandbox_cpu_s: float

    def targets(self) -> str:
        if self.run == "first" and self.cases > LARGE_CASES:
            return f"RSS < {TARGET_PEAK_MIB_LARGE:.0f} MiB"
        if self.run == "first":
            return f"wall < {TARGET_FIRST_WALL_S:.0f} s, RSS < {TARGET_PEAK_MIB:.0f} MiB"
        if self.cases > LARGE_CASES:
            return "none at this size"
        return f"wall < {TARGET_RERUN_WALL_S:.0f} s"

    def meets(self) -> bool:
        if self.run == "first" and self.cases > LARGE_CASES:
            return self.peak_mib < TARGET_PEAK_MIB_LARGE
        if self.run == "first":
            return self.wall_s < TARGET_FIRST_WALL_S and self.peak_mib < TARGET_PEAK_MIB
        return self.cases > LARGE_CASES or self.wall_s < TARGET_RERUN_WALL_S


# -- the sandbox process -------------------------------------------------------------------------


def _serve(kind: str, cases: int, workdir: str, ready: Any, stop: Any) -> None:
    """Child process: generate the cases, serve them (or write the workbook), report how to reach them, wait."""
    from connector.sandbox.generate import generate_cases

    started = time.perf_counter()
    generated = generate_cases(cases, seed=1)
    if kind == "excel":
        from connector.sandbox.excel_writer import write_workbook

        path = Path(workdir) / "cases.xlsx"
        write_workbook(generated, path)
        del generated
        ready.put({"options": {"path": str(path)}, "env": {}, "setup_s": time.perf_counter() - started})
        stop.get()
        return
    if kind == "salesforce":
        from connector.sandbox.salesforce import start_sandbox

        handle: Any = start_sandbox(generated, daily_limit=10_000_000)
        options, env = handle.config_options(), {}
    elif kind == "odk_central":
        from connector.sandbox.odk_central import start_odk_sandbox

        handle = start_odk_sandbox(generated)
        options, env = handle.config_options(password_env=SECRET_ENV[kind]), {SECRET_ENV[kind]: handle.password}
    else:
        from connector.sandbox.kobo import start_kobo_sandbox

        handle = start_kobo_sandbox(generated)
        options, env = handle.config_options(token_env=SECRET_ENV[kind]), {SECRET_ENV[kind]: handle.token}
    del generated
    ready.put({"options": options, "env": env, "setup_s": time.perf_counter() - started})
    stop.get()
    handle.stop()


class Sandbox:
    """The sandbox process of one source and size; `alive()` is checked while the connector runs."""

    def __init__(self, kind: str, cases: int, workdir: Path, timeout: float):
        ctx = mp.get_context("spawn")
        self.kind = kind
        # A queue, not an Event, says stop: Event.set() waits for every waiter to wake, forever if one was killed.
        self.ready, self.stop = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=_serve, args=(kind, cases, str(workdir), self.ready, self.stop), daemon=True)
        self.process.start()
        self.info: dict[str, Any] = result_of(self.ready, self.process, f"{kind} sandbox", timeout)

    def cpu_seconds(self) -> float:
        """CPU seconds the sandbox process has used so far (user + system, from /proc; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check(self) -> None:
        if not self.process.is_alive():
            raise WorkerDied(f"{self.kind} sandbox process died (exit code {self.process.exitcode})")

    def close(self) -> None:
        self.stop.put(None)
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


# -- the connector process -----------------------------------------------------------------------


def _write_config(kind: str, options: dict[str, Any], workdir: Path) -> Path:
    import yaml

    opts = dict(options)
    if kind == "salesforce":
        opts["bulk_poll_seconds"] = 0.2  # the sandbox finishes jobs at once; the default 2 s would be idle time
    config = {
        "partner": {"id": "bench", "name": "Benchmark (generated cases)", "datasource": "Benchmark"},
        "store": {"url": f"sqlite:///{workdir / 'state.sqlite'}"},
        "sources": [{"id": f"bench-{kind}", "type": kind, "mapping": MAPPINGS[kind], "options": opts}],
        "release": {"method": "k_anonymity", "k": 10},
        "destination": {"type": "folder", "path": str(workdir / "releases")},
    }
    path = workdir / "job.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _connector_command() -> list[str]:
    script = Path(sys.executable).with_name("htcds-connector")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from connector.cli import main; sys.exit(main())"]


def _tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants now (the connector's mapping worker
    included), from /proc; 0 where /proc cannot tell."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(c) for c in children.read().split())
        except (OSError, ValueError):
            continue
    return total / 2**20


def _profiled(command: list[str], profile: Path | None, label: str) -> list[str]:
    """Wrap the connector in py-spy (folded stacks, subprocesses too) when a profile folder is given."""
    if profile is None:
        return command
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = profile / (label.replace(" ", "-").replace(",", "") + ".folded")
    return [spy, "record", "--subprocesses", "--rate", "100", "--format", "raw", "--output", str(out), "--", *command]


def run_connector(config: Path, env: dict[str, str], sandbox: Sandbox, timeout: float, label: str,
                  profile: Path | None = None) -> tuple[float, float, float, int, dict[str, Any]]:
    """Run the connector once as a child process; (wall s, CPU s, peak MiB, exit code, its JSON).

    CPU seconds include the connector's own child processes (its mapping worker), which it waits
    for; peak memory is the larger of its own peak and the most its process tree held at once
    (sampled every 20 ms)."""
    out_path, err_path = config.with_suffix(".out"), config.with_suffix(".err")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        command = _profiled([*_connector_command(), "run", str(config), "--json", *os.environ.get("BENCH_CONNECTOR_ARGS", "").split()], profile, label)
        child = subprocess.Popen(command, stdout=out, stderr=err,
                                 env={**os.environ, **env}, cwd=config.parent)
        tree_peak = 0.0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            tree_peak = max(tree_peak, _tree_rss_mib(child.pid))
            try:
                sandbox.check()
                if time.perf_counter() - started > timeout:
                    raise WorkerDied(f"{label}: the connector ran past {timeout:.0f} s")
            except WorkerDied:
                child.kill()
                os.wait4(child.pid, 0)
                raise
            time.sleep(0.02)
        wall = time.perf_counter() - started
    child.returncode = code = os.waitstatus_to_exitcode(status)
    if code < 0:
        raise WorkerDied(f"{label}: the connector was killed by signal {signal.Signals(-code).name}")
    if code > 1:  # 0 ok, 1 ok with rejected values (the generated data is messy on purpose)
        tail = err_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise WorkerDied(f"{label}: the connector exited {code}: " + " | ".join(tail))
    try:
        text = out_path.read_text(encoding="utf-8")
        report = json.loads("\n".join(line for line in text.splitlines() if not line.startswith("py-spy>")))
    except ValueError as exc:
        raise WorkerDied(f"{label}: the connector's --json output is not JSON ({exc})") from None
    return wall, usage.ru_utime + usage.ru_stime, max(usage.ru_maxrss / 1024, tree_peak), code, report


def _sync_totals(report: dict[str, Any]) -> tuple[int, float]:
    """Records fetched and seconds spent syncing, from the run's JSON report."""
    sources = (report.get("sync") or {}).get("sources", [])
    return sum(s.get("fetched", 0) for s in sources), sum(s.get("seconds", 0.0) for s in sources)


def bench_one(kind: str, cases: int, timeout: float, profile: Path | None = None) -> list[Measured]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-e2e-{kind}-"))
    try:
        sandbox = Sandbox(kind, cases, workdir, timeout)
        try:
            config = _write_config(kind, sandbox.info["options"], workdir)
            results = []
            for run in ("first", "re-run"):
                label = f"{kind} {cases:,} {run}"
                served_before = sandbox.cpu_seconds()
                wall, cpu, peak, code, report = run_connector(config, sandbox.info["env"], sandbox, timeout, label, profile)
                served = sandbox.cpu_seconds() - served_before
                fetched, sync_s = _sync_totals(report)
                release = (report.get("release") or {}).get("status")
                results.append(Measured(kind, cases, run, round(wall, 1), round(cpu, 1), round(peak, 0), code, fetched, round(sync_s, 1), release, round(served, 1)))
            return results
        finally:
            sandbox.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def print_table(rows: list[Measured]) -> None:
    print("| source | cases | run | wall (s) | CPU (s) | peak RSS (MiB) | of it sync (s) | fetched | release | sandbox CPU (s) | target | meets |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |")
    for r in rows:
        print(f"| {r.source} | {r.cases:,} | {r.run} | {r.wall_s:.1f} | {r.cpu_s:.1f} | {r.peak_mib:.0f} | {r.sync_s:.1f} | {r.fetched:,} | {r.release} | {r.sandbox_cpu_s:.1f} "
              f"| {r.targets()} | {'yes' if r.meets() else 'no'} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000", help="comma-separated case counts (default 10000; the issue's are 10000,30000,100000)")
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated, from {', '.join(SOURCES)}")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds any one step may take before the benchmark gives up (default 1800)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per run")
    parser.add_argument("--py-spy", dest="profile", type=Path, metavar="DIR",
                        help="profile every connector run with py-spy into DIR (folded stacks; the numbers then include py-spy's cost)")
    args = parser.parse_args(argv)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        parser.error(f"unknown source {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores", flush=True)
    rows: list[Measured] = []
    try:
        for cases in sizes:
            for kind in sources:
                for result in bench_one(kind, cases, args.timeout, args.profile):
                    rows.append(result)
                    if args.json:
                        print(json.dumps(result.__dict__), flush=True)
    except WorkerDied as exc:
        if rows:
            print_table(rows)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
