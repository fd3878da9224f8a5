"""What must survive a crash, read back for comparison: store rows, cursors, ledger, published files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from connector import store as store_module
from connector.store import Store


def job_state(folder: Path, partner: str = "test-ngo") -> dict[str, Any]:
    """The job's durable state without what legitimately differs between runs (times, run ids)."""
    store = Store(f"sqlite:///{folder / 'state' / 'cases.sqlite'}")
    try:
        with store._engine.connect() as conn:
            c = store_module.cases.c
            cases = [tuple(row) for row in conn.execute(select(c.source, c.record_id, c.data, c.content_hash, c.deleted, c.source_updated_at).order_by(c.source, c.record_id))]
            cursors = {row.source: row.value for row in conn.execute(select(store_module.cursors))}
            r = store_module.rejections.c
            rejections = sorted(tuple(row) for row in conn.execute(select(r.source, r.record_id, r.field, r.value, r.reason)))
            ledger = sorted(row.release_id for row in conn.execute(select(store_module.releases.c.release_id)))
    finally:
        store.close()
    return {"cases": cases, "cursors": cursors, "rejections": rejections, "ledger": ledger, "published": published(folder / "releases" / partner)}


def published(root: Path) -> dict[str, dict[str, Any]]:
    """Visible release folders -> their files (manifest without its time and run ids)."""
    out: dict[str, dict[str, Any]] = {}
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        files: dict[str, Any] = {}
        for path in sorted(folder.iterdir()):
            if path.name == "manifest.json":
                manifest = json.loads(path.read_text())
                manifest.pop("created_at"), manifest.pop("run_ids")
                files[path.name] = manifest
            else:
                files[path.name] = path.read_bytes()
        out[folder.name] = files
    return out
