"""Named crash points for the fault-injection suite (`tests/faults/`).

A crash at the wrong moment is the failure an unattended job meets most (OOM killer, a reboot, a
container evicted), and the one a test cannot provoke from outside with any precision. So the
stages that matter call `fault_point("stage")`; when the environment variable `HTCDS_FAULT` names
that point, the process kills itself with SIGKILL there: no `finally`, no flush, no commit, exactly
like `kill -9`. The suite then runs the job again and checks that nothing was lost or published
twice.

    HTCDS_FAULT=store.commit          # die at the first time the store is about to commit a page
    HTCDS_FAULT=sync.page_committed:3 # die after the third committed page

The variable is read once at import, so in production (variable unset) a fault point is one
comparison with None. The points in the code base:

| point | where |
| --- | --- |
| `sync.page_fetched` | pipeline: a page came from the source, nothing of it is stored yet (mid-fetch) |
| `store.commit` | store: inside the page's transaction, after every write, before COMMIT |
| `sync.page_committed` | pipeline: a page is committed, the next one is not fetched (between pages) |
| `release.write` | folder destination: before each file of the bundle is written (writing the release) |
| `publish.before_ledger` | pipeline: the destination has the release, the store's ledger does not (mid-publish) |
"""

from __future__ import annotations

import os
import signal
import sys

ENV_VAR = "HTCDS_FAULT"


def _parse(value: str | None) -> tuple[str, int] | None:
    """`name` or `name:count` -> (name, count); None when unset or empty."""
    if not value:
        return None
    name, _, count = value.strip().partition(":")
    return name, max(1, int(count)) if count.strip() else 1


_target: tuple[str, int] | None = _parse(os.environ.get(ENV_VAR))
_hits = 0


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if `HTCDS_FAULT` names this point (at its count-th hit)."""
    if _target is None or _target[0] != name:
        return
    global _hits
    _hits += 1
    if _hits >= _target[1]:
        sys.stderr.write(f"fault injected: SIGKILL at {name} (hit {_hits})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def configure(value: str | None) -> None:
    """Re-read a fault spec (for in-process tests of this module); None disarms every point."""
    global _target, _hits
    _target, _hits = _parse(value), 0
