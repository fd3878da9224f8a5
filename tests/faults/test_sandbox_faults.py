"""A server's bad day mid-paging: the run completes, or fails with exit code 3 and the next run completes.

Each test runs a whole job in-process, as `htcds-connector run` does (`connector.scheduler.run_job`),
against the Salesforce, ODK Central and Kobo sandboxes on 127.0.0.1 serving the same generated
cases in several pages, with one fault injected at the request for page 3: a 429 with Retry-After
(Salesforce answers 503 + Retry-After), a 500, a JSON body cut short, an HTML page where JSON was
expected, a dropped connection (a TCP proxy in front of the sandbox resets it), a session that
expires. Afterwards the store, the cursors, the rejections, the release ledger and the published
files must equal those of an uninterrupted run of the same job.

Kobo's API tokens do not expire, so the session test covers Salesforce and ODK Central only.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from connector.pipeline import EXIT_SOURCE
from connector.sandbox.generate import generate_cases
from connector.sandbox.kobo import start_kobo_sandbox
from connector.sandbox.odk_central import start_odk_sandbox
from connector.sandbox.salesforce import start_sandbox
from connector.scheduler import RunOutcome, run_job
from tests.faults.state import job_state

KINDS = ("salesforce", "odk_central", "kobo")
CASES, SEED = 48, 7
FAULT_AT = 3  # the request for page 3: two pages are committed when it fails
MAX_RETRIES = 2

# Known product bug (connector/sources/kobo.py and odk_central.py, `_pass`): a page whose rows this run
# already delivered moves the mark but keeps the `$skip`/`start` offset, so the next request skips
# rows after the mark. Here the resumed Kobo run's `edited` mark stops short of the uninterrupted
# run's; in an incremental run with many new submissions it loses edits. Fix: reset the offset
# whenever the mark moved (`if records or (mark.at, len(mark.ids)) != start: skip = 0`).

# One fault, in each server's words: (form servers' Faults.add kwargs, Salesforce's Faults.add kwargs).
FAULTS = {
    "rate_limited": ({"status": 429, "retry_after": 1}, {"kind": "unavailable", "retry_after": 1}),
    "server_error": ({"status": 500}, {"kind": "server_error"}),
    "truncated_json": ({"status": 200, "kind": "truncate"}, {"kind": "malformed_json"}),
    "html_page": ({"status": 200, "kind": "html"}, {"kind": "html"}),
}


# -- a TCP proxy that drops connections --------------------------------------------------------------


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 in front of `target`; after `drop(n)` the next n requests that arrive
    (whatever bytes a client sends next, on any connection) are not forwarded: the connection is reset.

    Works for HTTP and HTTPS alike (bytes are relayed as they are). Threads are daemons, every
    socket is closed by `stop()`, and the accept loop polls a stop flag.
    """

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url_host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._to_drop = 0
        self.dropped = 0
        self._sockets: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="dropping-proxy", daemon=True)
        self._thread.start()

    def drop(self, n: int = 1) -> None:
        with self._lock:
            self._to_drop += n

    def _take_drop(self) -> bool:
        with self._lock:
            if self._to_drop > 0:
                self._to_drop -= 1
                self.dropped += 1
                return True
            return False

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and self._take_drop():
                    src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on it
    except OSError:
        pass
    sock.close()


# -- the three servers, behind one interface ----------------------------------------------------------


@dataclass
class Server:
    """A running sandbox, a job source over it, and a hook on its data requests (pages)."""

    kind: str
    handle: Any
    source_type: str
    mapping: str
    options: dict[str, Any]
    data_path: str  # a substring of the path of every data (page) request
    request_times: list[float] = field(default_factory=list)  # when each data request arrived
    actions: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    baseline_exit: int = -1
    page_log: list[tuple[str, int]] = field(default_factory=list)  # (cursor, records stored) after each page of the uninterrupted run

    def on_data_request(self) -> None:
        """Called by the sandbox for each data request before it is answered (or faulted)."""
        self.request_times.append(time.monotonic())
        for action in self.actions.pop(len(self.request_times), []):
            action()

    def before_request(self, nth: int, action: Callable[[], None]) -> None:
        """Run `action` in the server when data request number `nth` (1-based) arrives, before it is answered."""
        self.actions.setdefault(nth, []).append(action)

    def inject(self, fault: str, *, times: int = 1, at: int = FAULT_AT) -> None:
        """The data request number `at` and the next `times - 1` requests fail with `fault`."""
        form_kwargs, sf_kwargs = FAULTS[fault]
        if self.kind == "salesforce":
            kind, kwargs = sf_kwargs["kind"], {k: v for k, v in sf_kwargs.items() if k != "kind"}
            self.before_request(at, lambda: self.handle.faults.add(kind, path=self.data_path, times=times, **kwargs))
        else:
            self.before_request(at, lambda: self.handle.faults.add(path=self.data_path, times=times, **form_kwargs))

    def faults_served(self) -> int:
        if self.kind == "salesforce":
            return sum(n for key, n in self.handle.counts.items() if key.startswith("fault_"))
        return self.handle.requests["faults"]

    def logins(self) -> int:
        return self.handle.counts.get("token", 0) if self.kind == "salesforce" else self.handle.requests["sessions"]

    def reset(self) -> None:
        self.handle.faults.clear()
        self.request_times.clear()
        self.actions.clear()
        if self.kind == "salesforce":
            self.handle.reset_counts()
        else:
            self.handle.requests.clear()


def start_server(kind: str, monkeypatch: pytest.MonkeyPatch) -> Server:
    cases = generate_cases(CASES, seed=SEED)
    if kind == "salesforce":
        handle = start_sandbox(cases, page_size=80)  # about 8 cases per REST batch (children count): 6 pages
        # api: rest (no count query first), no back-off without Retry-After: the fast path.
        options = {**handle.config_options(), "api": "rest", "max_retries": MAX_RETRIES, "backoff_seconds": 0, "timeout_seconds": 10}
        server = Server(kind, handle, "salesforce", "salesforce_htcds", options, "/queryAll")
        # Faults.take sees the path of every API request: the hook on data requests.
        take = handle.faults.take

        def hooked_take(path: str) -> Any:
            if server.data_path in path:
                server.on_data_request()
            return take(path)

        handle.faults.take = hooked_take  # type: ignore[method-assign]
        return server
    if kind == "odk_central":
        handle = start_odk_sandbox(cases)
        monkeypatch.setenv("FAULTS_ODK_PASSWORD", handle.password)
        options = {**handle.config_options(password_env="FAULTS_ODK_PASSWORD"), "page_size": 10, "max_retries": MAX_RETRIES, "timeout": 10}
        server = Server(kind, handle, "odk_central", "xlsform_htcds", options, ".svc/Submissions")
    else:
        handle = start_kobo_sandbox(cases)
        monkeypatch.setenv("FAULTS_KOBO_TOKEN", handle.token)
        options = {**handle.config_options(token_env="FAULTS_KOBO_TOKEN"), "page_size": 10, "max_retries": MAX_RETRIES, "timeout": 10}
        server = Server(kind, handle, "kobo", "xlsform_htcds", options, "/data/")
    handle_request = handle.app.handle

    def hooked_handle(request: Any) -> Any:
        if server.data_path in request.path:
            server.on_data_request()
        return handle_request(request)

    handle.app.handle = hooked_handle  # the HTTP handler calls app.handle(request) for every request
    return server


def write_job(folder: Path, server: Server, **options: Any) -> Path:
    """A job in `folder`: the server's source -> SQLite store in state/ -> k-anonymized release in releases/."""
    config = folder / "job.yaml"
    config.write_text(
        f"""\
partner: {{id: test-ngo, datasource: Case Management}}
store: {{url: "sqlite:///state/cases.sqlite"}}
sources:
  - id: cases
    type: {server.source_type}
    mapping: {server.mapping}
    options: {json.dumps({**server.options, **options})}
release: {{method: k_anonymity, k: 2, suppression_limit: 0.5}}
destination: {{type: folder, path: releases}}
""",
        encoding="utf-8",
    )
    return config


def durable_state(folder: Path, kind: str) -> dict[str, Any]:
    """`job_state` without what legitimately differs between runs: the time in Kobo's cursor of its last id reconciliation."""
    state = job_state(folder)
    if kind == "kobo" and "cases" in state["cursors"]:
        cursor = json.loads(state["cursors"]["cases"])
        cursor.get("reconcile", {}).pop("at", None)
        state["cursors"]["cases"] = cursor
    return state


def stored_cursor(folder: Path) -> tuple[str | None, int]:
    """The committed cursor and number of stored cases, read over a separate connection."""
    with sqlite3.connect(folder / "state" / "cases.sqlite") as db:
        row = db.execute("select value from cursors where source = 'cases'").fetchone()
        count = db.execute("select count(*) from cases where source = 'cases'").fetchone()[0]
    return (row[0] if row else None), count


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A sandbox per server kind, and its job's state after one uninterrupted run."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        server = start_server(request.param, monkeypatch)
        try:
            folder = tmp_path_factory.mktemp(f"uninterrupted-{request.param}")
            outcome = run_job(write_job(folder, server), progress=lambda _source, _pages, _records: server.page_log.append(stored_cursor(folder)))
            assert outcome.exit_code in (0, 1), outcome.as_dict()
            assert outcome.release is not None and outcome.release.status == "published", outcome.as_dict()
            assert len(server.request_times) > FAULT_AT  # several pages, so page 3 is mid-paging
            server.baseline, server.baseline_exit = durable_state(folder, server.kind), outcome.exit_code
            assert len(server.baseline["published"]) == 1 and server.baseline["ledger"] == sorted(server.baseline["published"])
            yield server
        finally:
            server.handle.stop()


@pytest.fixture
def job(server: Server, tmp_path: Path) -> Iterator[Path]:
    """The server's job in tmp_path, with the server's faults, hooks and counts reset."""
    server.reset()
    yield write_job(tmp_path, server)
    server.reset()


def assert_completed_like_uninterrupted(outcome: RunOutcome, server: Server, folder: Path, *, resumed: bool = False) -> None:
    assert outcome.exit_code == server.baseline_exit, outcome.as_dict()
    (source,) = outcome.sync.sources
    assert (source.status, source.error) == ("ok", None)
    assert outcome.release.status == "published"
    state, baseline = durable_state(folder, server.kind), server.baseline
    if resumed and server.kind == "odk_central":
        # ODK Central's edit and deletion passes start, on a first run, where the submissions pass
        # ended. A run resumed after a failed first run reads them from the start instead, and its
        # cursor keeps only what it yielded pages for: it may lag the uninterrupted run's (the next
        # run reads those rows again, harmlessly) but must never be ahead of it.
        got, want = json.loads(state.pop("cursors")["cases"]), json.loads(baseline["cursors"]["cases"])
        baseline = {k: v for k, v in baseline.items() if k != "cursors"}
        assert got["submitted"] == want["submitted"]
        for name in ("updated", "deleted"):
            assert got[name]["at"] is None or _instant(got[name]["at"]) <= _instant(want[name]["at"]), (name, got, want)
    assert state == baseline


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["server_error", "truncated_json", "html_page"])  # rate_limited: below
def test_a_fault_once_mid_paging_is_retried_and_the_run_completes_as_if_uninterrupted(server: Server, job: Path, fault: str) -> None:
    server.inject(fault)
    outcome = run_job(job)
    assert server.faults_served() == 1  # the fault did hit, at the request for page 3
    assert_completed_like_uninterrupted(outcome, server, job.parent)


def test_a_rate_limit_is_waited_out_for_as_long_as_retry_after_says(server: Server, job: Path) -> None:
    server.inject("rate_limited")  # Retry-After: 1; without it the next try comes within 0.5 s
    outcome = run_job(job)
    assert server.faults_served() == 1
    assert server.request_times[FAULT_AT] - server.request_times[FAULT_AT - 1] >= 0.95
    assert_completed_like_uninterrupted(outcome, server, job.parent)


def test_persistent_server_errors_fail_with_exit_3_and_the_next_run_completes_as_if_uninterrupted(server: Server, job: Path) -> None:
    server.inject("server_error", times=1000)
    failed = run_job(job)
    assert failed.exit_code == EXIT_SOURCE == 3, failed.as_dict()
    (source,) = failed.sync.sources
    assert source.status == "failed" and "500" in source.error
    assert server.faults_served() == MAX_RETRIES + 1  # retried, then given up
    assert failed.release.status == "skipped"
    # the cursor and the cases are those after the last committed page, and nothing is published
    assert stored_cursor(job.parent) == server.page_log[FAULT_AT - 2]
    crashed = job_state(job.parent)
    assert crashed["published"] == {} and crashed["ledger"] == []

    server.handle.faults.clear()
    healed = run_job(job)
    assert_completed_like_uninterrupted(healed, server, job.parent, resumed=True)  # one release, published once


def test_a_dropped_connection_mid_paging_is_retried_and_the_run_completes_as_if_uninterrupted(
    server: Server, job: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = server.handle.url.split("://")[1].split(":")
    proxy = DroppingProxy((host, int(port)))
    scheme = server.handle.url.split("://")[0]
    proxied = f"{scheme}://{proxy.url_host}"
    try:
        if server.kind == "salesforce":
            # The token answer's instance_url sends every API call through the proxy too.
            direct, server.handle.state.base_url = server.handle.state.base_url, proxied
            config = write_job(tmp_path, server, login_url=proxied)
        else:
            config = write_job(tmp_path, server, url=proxied)
        server.before_request(FAULT_AT - 1, proxy.drop)  # the next request after page 2's, on any connection
        outcome = run_job(config)
    finally:
        if server.kind == "salesforce":
            server.handle.state.base_url = direct
        proxy.stop()
    assert proxy.dropped == 1
    retries = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "ConnectionError" in r.getMessage()]
    assert len(retries) == 1 and "retry 1" in retries[0], retries  # the page request was sent again
    assert_completed_like_uninterrupted(outcome, server, tmp_path)


@pytest.mark.parametrize("server", ["salesforce", "odk_central"], indirect=True)
def test_a_session_expiring_mid_paging_is_renewed_once_and_the_run_completes_as_if_uninterrupted(server: Server, job: Path) -> None:
    if server.kind == "salesforce":
        server.before_request(FAULT_AT, lambda: server.handle.faults.add("expire_token", path=server.data_path))
    else:
        server.before_request(FAULT_AT, server.handle.expire_sessions)
    outcome = run_job(job)
    assert server.logins() == 2  # logged in, and again once after the session expired
    assert_completed_like_uninterrupted(outcome, server, job.parent)
