"""`central serve --workers 2`: two receiver processes on one socket, one database and one files
folder. Why it exists: one Python process serves on one core, so reads waited behind the checks
of a burst of uploads (bench/central_load.py); two processes keep reads fast on a 2-core host."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from connector.central.auth import add_admin, add_partner
from connector.central.db import make_engine
from tests.unit.test_central_fixtures import make_bundle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workers(pid: int) -> list[int]:
    """The receiver processes the supervisor started (its children running the app)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_two_worker_processes_serve_one_database_and_stop_on_sigterm(tmp_path):
    data = tmp_path / "central"
    engine = make_engine(f"sqlite:///{data / 'central.sqlite'}")
    token, admin = add_partner(engine, "ngo-a"), add_admin(engine)
    engine.dispose()
    port = _free_port()
    command = [str(Path(sys.executable).with_name("htcds-connector")), "central", "serve", "--data-dir", str(data), "--port", str(port), "--workers", "2"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200 and len(_workers(server.pid)) == 2:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the receiver did not start with two workers"
            time.sleep(0.2)
        assert len(set(_workers(server.pid))) == 2

        bundle = make_bundle("ngo-a")
        posted = requests.post(url + "/releases", headers={"Authorization": f"Bearer {token}"},
                               files=[("files", (n, c)) for n, c in bundle.files.items()], timeout=60)
        assert posted.status_code == 201, posted.text
        # every new connection may land on either process: each one sees the release the other stored
        for _ in range(12):
            listed = requests.get(url + "/releases", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
            assert listed.status_code == 200 and bundle.release_id in listed.text
        again = requests.post(url + "/releases", headers={"Authorization": f"Bearer {token}"},
                              files=[("files", (n, c)) for n, c in bundle.files.items()], timeout=60)
        assert again.status_code == 200 and again.json()["release_id"] == bundle.release_id  # the same release, not a second version
    finally:
        workers = _workers(server.pid) if server.poll() is None else []
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    assert code == 0
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]
