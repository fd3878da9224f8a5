"""`central add-partner` prints a token once and stores only its hash; `register` wires the commands."""

from __future__ import annotations

import argparse

from sqlalchemy import select

from connector.central.auth import authenticate
from connector.central.cli import add_partner, register
from connector.central.db import make_engine, tokens


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="htcds-connector central")
    register(top.add_subparsers(dest="command", required=True))
    return top


def test_add_partner_prints_a_working_token_once_and_stores_only_its_hash(tmp_path, capsys):
    args = parser().parse_args(["add-partner", "ngo-athens", "--name", "NGO Athens", "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    token = capsys.readouterr().out.strip()
    engine = make_engine(f"sqlite:///{tmp_path / 'central.sqlite'}")
    try:
        assert authenticate(engine, token).partner == "ngo-athens"
        with engine.connect() as conn:
            cells = [str(v) for row in conn.execute(select(tokens)).all() for v in row]
        assert token.split(".", 1)[1] not in " ".join(cells)
    finally:
        engine.dispose()
    again = parser().parse_args(["add-partner", "ngo-athens", "--data-dir", str(tmp_path)])
    assert add_partner(again) == 2 and "--new-token" in capsys.readouterr().err


def test_admin_token_and_bad_partner_ids(tmp_path, capsys):
    args = parser().parse_args(["add-partner", "--admin", "--data-dir", str(tmp_path)])
    assert add_partner(args) == 0
    token = capsys.readouterr().out.strip()
    engine = make_engine(f"sqlite:///{tmp_path / 'central.sqlite'}")
    try:
        assert authenticate(engine, token).is_admin
    finally:
        engine.dispose()
    bad = parser().parse_args(["add-partner", "../etc", "--data-dir", str(tmp_path)])
    assert add_partner(bad) == 2 and "must match" in capsys.readouterr().err


def test_serve_defaults_to_loopback():
    args = parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.func.__name__ == "serve"


def test_add_partner_registers_its_datasource_values(tmp_path, capsys):
    from connector.central.auth import DEFAULT_DATASOURCES, partner_datasource_values

    args = parser().parse_args(["add-partner", "hotline-ua", "--datasource", "Hotline", "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    args = parser().parse_args(["add-partner", "ngo-b", "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    engine = make_engine(f"sqlite:///{tmp_path / 'central.sqlite'}")
    try:
        assert partner_datasource_values(engine, "hotline-ua") == ("Hotline",)
        assert partner_datasource_values(engine, "ngo-b") == DEFAULT_DATASOURCES
    finally:
        engine.dispose()


def test_the_server_thread_answers_keep_alive_requests_without_nagle_delays():
    """asyncio sets TCP_NODELAY only on sockets created as IPPROTO_TCP; without it each keep-alive
    response waited for a delayed ACK (~40 ms), which the load test measured."""
    import socket

    import httpx
    from fastapi import FastAPI

    from connector.central.cli import ServerThread

    app = FastAPI()
    app.get("/ping")(lambda: {"ok": True})
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.get("/ping").status_code == 200
        sockets = [c.transport.get_extra_info("socket") for c in server.server.server_state.connections]
        assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)


def test_without_the_central_extra_the_command_says_what_to_install(monkeypatch, capsys):
    """The receiver's web stack is imported only by a central command; missing, it is named."""
    import importlib.util

    from connector.cli import main
    from connector.errors import EXIT_CONFIG

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["central", "serve", "--data-dir", "x"]) == EXIT_CONFIG
    said = " ".join(capsys.readouterr().err.split())
    assert "needs the optional part `central` (uvicorn is missing)" in said and "pip install 'htcds-connector[central]'" in said


def test_a_partner_run_does_not_import_the_web_stack():
    import subprocess
    import sys

    code = "import sys; from connector.cli import _parser; _parser(); print(sorted(m for m in ('fastapi', 'uvicorn', 'connector.central.app') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
