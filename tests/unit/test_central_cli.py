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
