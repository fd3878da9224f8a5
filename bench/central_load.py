"""Load test: many partners publishing and the central team reading, at once, against the receiver.

The receiver runs in its own process (uvicorn, one worker, on 127.0.0.1 only), or with `--workers N`
as deployed by `htcds-connector central serve --workers N`, with SQLite or PostgreSQL behind it; this process runs `--clients` concurrent clients (asyncio, one keep-alive connection each) for
`--duration` seconds. Each client loops: pick an operation (publishes with `--publish-share`,
else a read), send it, record status and latency, then wait a random think time averaging
`--think` seconds (closed loop: 200 clients with a 1 s think time offer about 200 requests/s).

Operations: `publish` (a partner uploads one of its pre-built releases: new the first time, a 200
no-op after), and reads: `list` (GET /releases as a partner), `detail` (GET /releases/{id}),
`file` (GET .../files/data.csv), `harmonized` (admin GET /harmonized.csv, re-merged whenever a
partner's latest release changed) and `page` (the admin's HTML page). An error is any exception
or a status other than 200/201. Prints one table row per backend and operation, and `read (all)`,
then the receiver's CPU time over the run (per request too): latencies on a shared 2-core machine
move with other work, the receiver's own CPU seconds much less.

    .venv/bin/python bench/central_load.py                        # 200 clients, 10 s, SQLite and PostgreSQL
    .venv/bin/python bench/central_load.py --duration 120         # a longer run
    .venv/bin/python bench/central_load.py --backend sqlite --clients 50 --duration 5 --json

PostgreSQL: `--pg-url` (default postgresql+psycopg2://postgres@127.0.0.1:5432/test); the bench
creates its own schema there and drops it afterwards. Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
READS = ("list", "detail", "file", "harmonized", "page")
QIS = ["yearOfRegistration", "gender", "ageBroad", "citizenship"]
HIERARCHIES = {"yearOfRegistration": "year", "gender": "gender", "ageBroad": "age", "citizenship": "country"}
COUNTRIES = ["UA", "MD", "RO", "BG", "PL", "GR", "NG", "VN"]


def make_bundles(partner: str, count: int, rows: int, seed: int) -> list[dict[str, bytes]]:
    """`count` different releases of `partner`, made the production way (protect, gate, bundle);
    each is a part of its own (its own `releasePart` label), as a series would publish them."""
    import pandas as pd

    from connector.release import build_bundle
    from connector.schema import load_schema
    from connector.config import ReleaseConfig
    from privacy.gate import admit
    from privacy.protect import protect

    schema = load_schema()
    out = []
    for i in range(count):
        rng = random.Random(f"{seed}-{partner}-{i}")
        table = pd.DataFrame({
            "yearOfRegistration": [rng.randint(2018, 2024) for _ in range(rows)],
            "Datasource": "Case Management",
            "gender": [rng.choice(["Female", "Male"]) for _ in range(rows)],
            "ageBroad": [rng.randint(14, 60) for _ in range(rows)],
            "citizenship": [rng.choice(COUNTRIES) for _ in range(rows)],
            "isForcedLabour": pd.array([rng.randint(0, 1) for _ in range(rows)], dtype="Int64"),
            "isSexualExploit": pd.array([rng.randint(0, 1) for _ in range(rows)], dtype="Int64"),
        })
        result = protect(table, ReleaseConfig(k=3), schema.view_roles(), hierarchy_names=HIERARCHIES)
        published = result.table.assign(releasePart=str(i + 1))
        privacy = {**result.privacy, "parts": {str(i + 1): len(published)}, "schema_version": schema.version}
        release = admit(published, privacy, roles=schema.view_roles())
        bundle = build_bundle(release, partner=partner, schema=schema, run_ids=[f"bench-{i}"], created_at=datetime(2025, 1, 1, tzinfo=timezone.utc))
        out.append(dict(bundle.files))
    return out


def _serve(database_url: str, data_dir: str, ready: Any, stop: Any) -> None:
    """Child process: the receiver on 127.0.0.1 and a free port, until `stop` is set; then the CPU
    seconds the receiver used meanwhile (all its threads), which machine load does not inflate."""
    import logging

    from connector.central.app import CentralSettings, create_app
    from connector.central.cli import ServerThread

    logging.getLogger("connector.central").setLevel(logging.WARNING)
    app = create_app(CentralSettings(database_url=database_url, data_dir=Path(data_dir)))
    with ServerThread(app) as server:
        started = time.process_time()
        ready.put(server.url)
        stop.wait()
        ready.put(time.process_time() - started)
    app.state.engine.dispose()


def _run_served(database_url: str, data_dir: Path, tokens: dict[str, str], admin: str, bundles: dict[str, list[dict[str, bytes]]],
                args: argparse.Namespace) -> tuple[dict[str, Any], float, float]:
    """The load against the receiver as deployed with `central serve --workers N` (uvicorn's
    supervisor and N processes on one socket, access log on); (samples, seconds, receiver CPU s).
    The CPU seconds are the supervisor's from os.wait4 after SIGTERM, which on Linux include the
    workers it waited for."""
    import signal
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).with_name("htcds-connector")), "central", "serve", "--data-dir", str(data_dir),
               "--database-url", database_url, "--port", str(port), "--workers", str(args.workers)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the receiver did not start: {' '.join(command[:4])} exited {server.poll()}") from None
                time.sleep(0.2)
        time.sleep(1.0)  # every worker up, not only the first
        started = time.monotonic()
        samples = asyncio.run(_load(url, tokens, admin, bundles, args))
        elapsed = time.monotonic() - started
    finally:
        server.send_signal(signal.SIGTERM)
        _, _, usage = os.wait4(server.pid, 0)
        server.returncode = 0
    return samples, elapsed, usage.ru_utime + usage.ru_stime


def _pg_schema_url(pg_url: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"central_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False), schema


def _drop_pg_schema(pg_url: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


class Connection:
    """One client's keep-alive HTTP/1.1 connection: a few lines of asyncio, because a general client
    with a 200-connection pool (httpx) cost more CPU per request than the receiver did, and on 2
    cores the bench then measured itself. Reconnects when the server closed the connection."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            try:
                self.writer.write(head.encode() + body)
                await self.writer.drain()
                return await self._response()
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.lower() == "close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(p[:-2] for p in parts)
        else:
            body = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except ConnectionError:
                pass
        self.reader = self.writer = None


def multipart(files: dict[str, bytes], boundary: str = "htcds-bench-boundary") -> tuple[bytes, str]:
    """A release upload as the connector sends it: one `files` part per file."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + content + b"\r\n"
        for name, content in files.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def _load(url: str, tokens: dict[str, str], admin: str, bundles: dict[str, list[dict[str, bytes]]], args: argparse.Namespace) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    samples: dict[str, Any] = {op: [] for op in ("publish", *READS)}
    causes: Counter[str] = Counter()
    published: dict[str, list[str]] = {p: [] for p in tokens}
    partners = sorted(tokens)
    bodies = {p: [multipart(files) for files in bundles[p]] for p in partners}
    deadline = time.monotonic() + args.duration

    # one release per partner first, so reads have something to read from the start
    first = Connection(host, port)
    for partner in partners:
        body, kind = bodies[partner][0]
        status, text = await first.request("POST", "/releases", {"Authorization": f"Bearer {tokens[partner]}", "Content-Type": kind}, body)
        if status not in (200, 201):
            raise RuntimeError(f"the first upload of {partner} was refused: HTTP {status} {text[:300]!r}")
        published[partner].append(json.loads(text)["release_id"])
    await first.close()

    async def one(rng: random.Random, connection: Connection) -> None:
        partner = rng.choice(partners)
        bearer = {"Authorization": f"Bearer {tokens[partner]}"}
        if rng.random() < args.publish_share:
            op = "publish"
            body, kind = rng.choice(bodies[partner])
            call = connection.request("POST", "/releases", {**bearer, "Content-Type": kind}, body)
        else:
            op = rng.choice(READS)
            release = rng.choice(published[partner])
            path, headers = {
                "list": ("/releases", bearer),
                "detail": (f"/releases/{release}", bearer),
                "file": (f"/releases/{release}/files/data.csv", bearer),
                "harmonized": ("/harmonized.csv", {"Authorization": f"Bearer {admin}"}),
                "page": ("/", {"Authorization": f"Bearer {admin}"}),
            }[op]
            call = connection.request("GET", path, headers)
        start = time.perf_counter()
        try:
            status, text = await asyncio.wait_for(call, timeout=60)
            ok = status in (200, 201)
            if not ok:
                causes[f"{op}: HTTP {status}"] += 1
            elif op == "publish" and json.loads(text)["release_id"] not in published[partner]:
                published[partner].append(json.loads(text)["release_id"])
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
            ok = False
            causes[f"{op}: {type(exc).__name__}"] += 1
            await connection.close()
        samples[op].append((time.perf_counter() - start, ok))

    async def client_loop(index: int) -> None:
        rng = random.Random(index)
        connection = Connection(host, port)
        await asyncio.sleep(rng.uniform(0, args.think))  # spread the start
        try:
            while time.monotonic() < deadline:
                await one(rng, connection)
                await asyncio.sleep(rng.uniform(0, 2 * args.think))
        finally:
            await connection.close()

    await asyncio.gather(*(client_loop(i) for i in range(args.clients)))
    samples["_causes"] = sorted(causes.items())
    return samples


def _percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run_backend(backend: str, args: argparse.Namespace, bundles: dict[str, list[dict[str, bytes]]]) -> list[dict[str, Any]]:
    from connector.central.auth import add_admin, add_partner
    from connector.central.db import make_engine

    with tempfile.TemporaryDirectory(prefix="central-load-") as tmp:
        schema = None
        if backend == "postgresql":
            database_url, schema = _pg_schema_url(args.pg_url)
        else:
            database_url = f"sqlite:///{Path(tmp) / 'central.sqlite'}"
        try:
            engine = make_engine(database_url)
            tokens = {p: add_partner(engine, p) for p in bundles}
            admin = add_admin(engine)
            engine.dispose()
            context = mp.get_context("spawn")
            if args.workers > 1:
                samples, elapsed, receiver_cpu = _run_served(database_url, Path(tmp) / "data", tokens, admin, bundles, args)
            else:
                ready, stop = context.Queue(), context.Event()
                server = context.Process(target=_serve, args=(database_url, str(Path(tmp) / "data"), ready, stop), daemon=True)
                server.start()
                try:
                    url = ready.get(timeout=60)
                    started = time.monotonic()
                    samples = asyncio.run(_load(url, tokens, admin, bundles, args))
                    elapsed = time.monotonic() - started
                    stop.set()
                    receiver_cpu = ready.get(timeout=30)
                finally:
                    stop.set()
                    server.join(timeout=30)
                    if server.is_alive():
                        server.terminate()
        finally:
            if schema:
                _drop_pg_schema(args.pg_url, schema)

    rows = []
    groups = {op: samples[op] for op in ("publish", *READS)}
    groups["read (all)"] = [s for op in READS for s in samples[op]]
    total = sum(len(v) for k, v in groups.items() if k != "read (all)")
    for op, values in groups.items():
        latencies = sorted(t * 1000 for t, _ in values)
        rows.append({
            "backend": backend, "operation": op, "requests": len(values), "errors": sum(1 for _, ok in values if not ok),
            "p50_ms": _percentile(latencies, 50), "p95_ms": _percentile(latencies, 95), "p99_ms": _percentile(latencies, 99),
            "requests_per_s": round(total / elapsed, 1) if op == "read (all)" else None,
        })
    rows[-1]["error_causes"] = dict(samples["_causes"])  # type: ignore[arg-type]
    rows[-1]["receiver_cpu_s"] = round(receiver_cpu, 2)
    rows[-1]["receiver_cpu_ms_per_request"] = round(1000 * receiver_cpu / max(total + len(bundles), 1), 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per backend (default 10; e.g. 120 for a long run)")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (default 200)")
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds a client waits between requests (default 1.0)")
    parser.add_argument("--publish-share", type=float, default=0.1, help="share of operations that are publishes (default 0.1)")
    parser.add_argument("--partners", type=int, default=10, help="registered partners (default 10)")
    parser.add_argument("--releases", type=int, default=3, help="different releases per partner (default 3)")
    parser.add_argument("--rows", type=int, default=300, help="rows per release before anonymization (default 300)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--workers", type=int, default=1,
                        help="receiver processes: 1 runs the app in a child process; N > 1 runs `htcds-connector central serve --workers N` (default 1)")
    parser.add_argument("--pg-url", default=PG_URL, help=f"PostgreSQL server URL (default {PG_URL}); the bench uses its own schema")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 3600 or args.clients < 1:
        parser.error("--duration must be in (0, 3600] and --clients at least 1")

    bundles = {f"ngo-{i:02d}": make_bundles(f"ngo-{i:02d}", args.releases, args.rows, seed=1) for i in range(args.partners)}
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    load_before = os.getloadavg()[0]
    rows = [row for backend in backends for row in run_backend(backend, args, bundles)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{args.clients} clients, {args.duration:g} s per backend, think time {args.think:g} s, publishes {args.publish_share:.0%}, "
          f"{args.partners} partners x {args.releases} releases of {args.rows} rows; receiver: {args.workers} uvicorn worker(s) on 127.0.0.1; "
          f"{os.cpu_count()} CPUs, load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after (other work on the machine slows every number)")
    print("| backend | operation | requests | errors | p50 ms | p95 ms | p99 ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        name = f"**{row['operation']}** ({row['requests_per_s']} req/s in all)" if row["operation"] == "read (all)" else row["operation"]
        print(f"| {row['backend']} | {name} | {row['requests']} | {row['errors']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} |")
    for row in rows:
        if "receiver_cpu_s" in row:
            print(f"receiver CPU on {row['backend']}: {row['receiver_cpu_s']:.1f} s ({row['receiver_cpu_ms_per_request']:.1f} ms per request, "
                  "all threads; other work on the machine moves it far less than the latencies)")
    for row in rows:
        if row.get("error_causes"):
            print(f"errors on {row['backend']}: " + ", ".join(f"{cause} x{n}" for cause, n in row["error_causes"].items()))
    return 0 if all(row["errors"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
