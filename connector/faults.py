"""Named crash points for the fault-injection suite (`tests/faults/`).

A crash at the wrong moment is the failure an unattended job meets most (OOM killer, a reboot, a
container evicted), and the one a test cannot provoke from outside with any precision. So the
stages that matter call `fault_point("stage")`; when the environment variable `HTCDS_FAULT` names
that point, the process kills itself with SIGKILL there: no `finally`, no flush, no commit, exactly
like `kill -9`. The suite then runs the job again and checks that nothing was lost or published
twice.

    HTCDS_FAULT=store.commit          # die at the first time the store is about to commit a page
    HTCDS_FAULT=sync.page_committed:3 # die after the third committed page

A point can also fail instead of dying, for the failures an unattended job must report rather than
survive: `=ENOSPC` (or any errno name: `EROFS`, `EIO`) raises that OSError there, as a full disk
would; `=SIGSTOP` stops the process there until SIGCONT, so a test can act on the world in between
(terminate the store's PostgreSQL connection) and let it run on:

    HTCDS_FAULT=store.commit:2=ENOSPC # the second page's commit finds the disk full
    HTCDS_FAULT=store.commit=SIGSTOP  # pause inside the first page's transaction

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

import errno
import os
import signal
import sys

ENV_VAR = "HTCDS_FAULT"


def _parse(value: str | None) -> tuple[str, int, str] | None:
    """`name[:count][=ACTION]` -> (name, count, action); None when unset or empty. Action: KILL
    (default), SIGSTOP, or an errno name."""
    if not value:
        return None
    spec, _, action = value.strip().partition("=")
    name, _, count = spec.partition(":")
    action = action.strip().upper() or "KILL"
    if action not in ("KILL", "SIGSTOP") and not isinstance(getattr(errno, action, None), int):
        raise ValueError(f"{ENV_VAR}: unknown action {action!r} (KILL, SIGSTOP or an errno name such as ENOSPC)")
    return name, max(1, int(count)) if count.strip() else 1, action


_target: tuple[str, int, str] | None = _parse(os.environ.get(ENV_VAR))
_hits = 0


def fault_point(name: str) -> None:
    """Act as `HTCDS_FAULT` says if it names this point (at its count-th hit): SIGKILL by default."""
    if _target is None or _target[0] != name:
        return
    global _hits
    _hits += 1
    if _hits != _target[1] and not (_target[2] == "KILL" and _hits > _target[1]):
        return
    action = _target[2]
    sys.stderr.write(f"fault injected: {'SIGKILL' if action == 'KILL' else action} at {name} (hit {_hits})\n")
    sys.stderr.flush()
    if action == "KILL":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "SIGSTOP":
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        code = getattr(errno, action)
        raise OSError(code, os.strerror(code))


def configure(value: str | None) -> None:
    """Re-read a fault spec (for in-process tests of this module); None disarms every point."""
    global _target, _hits
    _target, _hits = _parse(value), 0
