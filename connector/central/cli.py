"""`htcds-connector central serve | add-partner`: the functions the main CLI wires in.

    htcds-connector central add-partner ngo-athens --name "NGO Athens" --data-dir /srv/htcds
    htcds-connector central add-partner --admin --data-dir /srv/htcds
    htcds-connector central serve --data-dir /srv/htcds --port 8080     # TLS: deploy/central/

`register(subparsers)` adds both commands with their arguments to an argparse sub-parser group;
`serve(args)` and `add_partner(args)` are the handlers (return an exit code).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
from dataclasses import fields
import time
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.central.app import CentralSettings

# The optional extra `central` (pyproject.toml): its modules are imported only by a central
# command, so a partner's `htcds-connector run` does not load a web stack it never uses.
EXTRA_MODULES = ("fastapi", "uvicorn", "multipart", "pyarrow")

DB_ENV = "HTCDS_CENTRAL_DATABASE_URL"


def missing_module() -> str | None:
    """The first module of the `central` extra that is not installed, or None."""
    from importlib.util import find_spec

    return next((name for name in EXTRA_MODULES if find_spec(name) is None), None)


def _needs_extra(command: Any) -> Any:
    """The command, refusing with what to install when the `central` extra is missing."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        missing = missing_module()
        if missing:
            from connector.errors import ConfigurationError

            raise ConfigurationError(f"this command needs the optional part `central` ({missing} is missing)",
                                     hint="pip install 'htcds-connector[central]'")
        return command(args)

    return run


def create_app(settings: CentralSettings) -> Any:
    from connector.central.app import create_app as create

    return create(settings)


def _settings(args: argparse.Namespace) -> CentralSettings:
    from connector.central.app import MB, CentralSettings
    data_dir = Path(args.data_dir).expanduser().resolve()
    url = args.database_url or os.environ.get(DB_ENV) or f"sqlite:///{data_dir / 'central.sqlite'}"
    return CentralSettings(
        database_url=url,
        data_dir=data_dir,
        max_upload_bytes=int(getattr(args, "max_upload_mb", 64) * MB),
        max_inflight_upload_bytes=int(getattr(args, "max_inflight_upload_mb", 256) * MB),
        min_k=int(getattr(args, "min_k", 2)),
    )


def add_partner(args: argparse.Namespace) -> int:
    """Create a partner (or, with --admin, an admin token) and print the token once."""
    from connector.central.auth import PartnerExists, add_admin
    from connector.central.auth import add_partner as create_partner
    from connector.central.db import make_engine

    settings = _settings(args)
    engine = make_engine(settings.database_url)
    try:
        if args.admin:
            token, who = add_admin(engine), "the central team (admin)"
        else:
            if not args.partner:
                print("give a partner id (e.g. ngo-athens) or --admin", file=sys.stderr)
                return 2
            token = create_partner(engine, args.partner, args.name or "", new_token=args.new_token, datasources=getattr(args, "datasource", None) or ())
            who = f"partner {args.partner}"
    except (PartnerExists, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"token for {who} (shown only once; only its hash is stored):", file=sys.stderr)
    print(token)
    if not args.admin:
        print("give it to the partner; in connector.yaml: destination: {type: central_api, url: ..., token_env: HTCDS_CENTRAL_TOKEN}", file=sys.stderr)
    return 0


SETTINGS_ENV = "HTCDS_CENTRAL_SETTINGS"  # the settings handed to `--workers` processes (JSON)


def serve(args: argparse.Namespace) -> int:
    """Run the receiver with uvicorn until interrupted. Binds 127.0.0.1 unless --host says otherwise;
    put a TLS reverse proxy in front (deploy/central/).

    `--workers N` runs N receiver processes on one socket (uvicorn's workers), all on the same
    database and files folder. Why: one Python process serves on one core, and a burst of uploads
    (each re-checked by the gate) then makes reads wait behind it; with two processes on two cores
    the read p99 under bench/central_load.py's burst fell from ~530-620 ms to ~75-170 ms (SQLite). Uploads
    racing between processes are safe: versions are numbered in one transaction and a conflict is
    looked at again (app.py). The limits (`--max-inflight-upload-mb`, check slots) are per process."""
    import uvicorn

    settings = _settings(args)
    options: dict[str, Any] = dict(host=args.host, port=args.port, proxy_headers=True, forwarded_allow_ips=args.forwarded_allow_ips, log_level="info",
                                   access_log=bool(getattr(args, "access_log", False)))
    workers = int(getattr(args, "workers", 1) or 1)
    if workers <= 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    create_app(settings).state.engine.dispose()  # tables created once, before the workers start
    handed = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name != "schema"}  # the schema is the packaged one
    os.environ[SETTINGS_ENV] = json.dumps(handed, default=str)
    uvicorn.run("connector.central.cli:app_from_environment", factory=True, workers=workers, **options)
    return 0


def app_from_environment() -> Any:
    """The app of one `--workers` process, from the settings `serve` left in the environment."""
    from connector.central.app import CentralSettings

    values = json.loads(os.environ[SETTINGS_ENV])
    return create_app(CentralSettings(**{**values, "data_dir": Path(values["data_dir"])}))


def register(subparsers: Any) -> None:
    """Add `serve` and `add-partner` to an argparse sub-parser group (the main CLI's `central`)."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", default="central-data", help="where received files (and the default SQLite database) live")
        p.add_argument("--database-url", default=None, help=f"SQLAlchemy URL (default: SQLite in --data-dir; env {DB_ENV})")

    p = subparsers.add_parser("serve", help="run the central receiver", epilog="example: htcds-connector central serve --data-dir /srv/htcds --port 8080")
    common(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (keep 127.0.0.1 behind a reverse proxy)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-upload-mb", type=float, default=64, help="largest accepted request body")
    p.add_argument("--max-inflight-upload-mb", type=float, default=256, help="all request bodies being received at once; beyond it 503 + Retry-After")
    p.add_argument("--min-k", type=int, default=2, help="refuse k-anonymous releases with a smaller k")
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1", help="proxies trusted for X-Forwarded-* headers")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default: the reverse proxy in front logs them, and a line per request costs the receiver CPU)")
    p.add_argument("--workers", type=int, default=1, help="receiver processes on one socket (2 on a 2-core host keeps reads fast while uploads are checked)")
    p.set_defaults(func=_needs_extra(serve))

    p = subparsers.add_parser("add-partner", help="register a partner and print its token once",
                              epilog='example: htcds-connector central add-partner ngo-athens --name "NGO Athens"')
    common(p)
    p.add_argument("partner", nargs="?", help="the partner's id: its connector.yaml partner.id")
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--admin", action="store_true", help="issue an admin token for the central team instead")
    p.add_argument("--new-token", action="store_true", help="issue another token for an existing partner (rotation)")
    p.add_argument("--datasource", action="append", default=None,
                   help="a Datasource value this partner's releases may carry (repeatable; default: Case Management and Hotline)")
    p.set_defaults(func=_needs_extra(add_partner))


class ServerThread:
    """uvicorn in a background thread on 127.0.0.1 and a free port; for tests and the demo.

        with ServerThread(create_app(settings)) as server:
            requests.get(server.url + "/healthz")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        import socket

        import uvicorn

        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
        # without it every keep-alive response waited ~40 ms for a delayed ACK (Nagle).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the receiver did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ServerThread", "add_partner", "app_from_environment", "register", "serve"]
