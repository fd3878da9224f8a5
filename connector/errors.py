"""Every failure the connector reports, under one root that carries its exit code and a next step.

Why one root: an unattended run is judged by its exit code alone (cron, systemd, Kubernetes), so a
failure must say which documented code it is where it is raised, not be guessed at by each
command. `cli.main` catches `ConnectorError` once, prints one line (`message`, then `hint`), writes
the JSON report when the command has one, and exits with `exit_code`. Anything else that escapes
is a bug and becomes `InternalError` (exit 7), so no failure ever exits 1, which the README
reserves for "finished with rejections".

    raise SourceError("source sf: object Case", "HTTP 500 after 5 attempts", transient=True)

Messages name where (file, line, source, record id, field) and what; never a secret or a value of
a record (a value may be personal data).
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

# Exit codes, documented in the README's table (a test checks that every one is there).
EXIT_OK = 0
EXIT_REJECTIONS = 1
EXIT_CONFIG = 2
EXIT_SOURCE = 3
EXIT_GATE = 4
EXIT_PUBLISH = 5
EXIT_LOCKED = 6
EXIT_INTERNAL = 7

EXIT_MEANINGS: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_REJECTIONS: "finished with rejections",
    EXIT_CONFIG: "config or store error",
    EXIT_SOURCE: "a source failed",
    EXIT_GATE: "the privacy gate refused the release",
    EXIT_PUBLISH: "publishing failed",
    EXIT_LOCKED: "another run of the job holds the lock",
    EXIT_INTERNAL: "internal error (a bug)",
}


class ConnectorError(Exception):
    """The root of every failure the connector reports. `hint` says what to do next.

    `report` is set by the stage that failed to the partial report of its run (`SyncReport`,
    `ReleaseReport`), so `--json` still prints what was done before the failure.
    """

    exit_code: ClassVar[int] = EXIT_INTERNAL
    default_hint: ClassVar[str | None] = None

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.report: Any = None

    def one_line(self) -> str:
        """The message and the hint on one line, for a terminal or a log."""
        text = " ".join(self.message.split())
        return f"{text} ({self.hint})" if self.hint else text


class ConfigurationError(ConnectorError):
    """The job's config (or a file it names) is wrong: exit 2."""

    exit_code = EXIT_CONFIG


class StoreError(ConfigurationError):
    """The case store cannot be opened or used: unreachable, read-only, full, or of another version.

    Exit 2 as a config error: the fix is on the partner's side (URL, permissions, disk), and the
    next run resumes from the last committed page. The message never holds a password or case data.
    """

    default_hint = "check the store's URL, that the server runs, that the disk has room and the store is writable; the next run resumes"


class SourceError(ConnectorError):
    """A source failed in a way the run cannot work around (unreachable, auth refused, bad answer).

    `where` names the source, and where known the object/form, record id and field; `what` says
    what went wrong there. They are kept apart so a report can group by `where` and a message can
    be written without repeating it. `transient` is true when trying again later may succeed.
    """

    exit_code = EXIT_SOURCE

    def __init__(self, where: str, what: str, *, transient: bool = False, hint: str | None = None):
        self.where = where
        self.what = what
        self.transient = transient
        super().__init__(f"{where}: {what}", hint=hint)


class SourceAuthError(SourceError):
    """Credentials were refused or could not be read."""


class ReleaseRefused(ConnectorError):
    """The privacy step refused the release (the gate, the privacy model, or the spent budget): exit 4."""

    exit_code = EXIT_GATE
    default_hint = "nothing was published; `htcds-connector preview CONFIG` shows why"


class PublishError(ConnectorError):
    """Publishing failed; nothing partial is visible at the destination: exit 5.

    `sent` is False only when the destination knows that no byte of the bundle reached anyone
    (the folder's private staging was removed; the check before an upload failed). Not "visible as
    a whole release" is not enough for a synthetic release: files put before the manifest, or a body
    the receiver read before it answered, have left the partner, and their noisy counts are spent.
    So only a PublishError with `sent=False` gives the release's privacy budget back (the default
    keeps it spent).
    """

    exit_code = EXIT_PUBLISH
    default_hint = "nothing partial is visible at the destination; the next run retries"

    def __init__(self, message: str, *, hint: str | None = None, sent: bool = True):
        super().__init__(message, hint=hint)
        self.sent = sent


class LockedError(ConnectorError):
    """Another run of the same job holds the lock: exit 6."""

    exit_code = EXIT_LOCKED
    default_hint = "wait for it to finish; a crashed run does not leave a stale lock"


class InternalError(ConnectorError):
    """Something failed that no documented code covers: a bug. Exit 7.

    The message names only the exception's type and where in the code it was raised: the text of
    an unexpected exception could carry a value from a record.
    """

    exit_code = EXIT_INTERNAL
    default_hint = "this is a bug: run again with -v for the traceback and report it; the next run resumes"

    @classmethod
    def wrap(cls, exc: BaseException, doing: str) -> InternalError:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        place = f" at {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}" if tb is not None else ""
        return cls(f"internal error while {doing}: {type(exc).__name__}{place}")


# OS errors that mean "the machine's storage is the problem", not the code.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def storage_problem(exc: OSError) -> str:
    """A short, data-free description of a storage OSError (`disk full`, `read-only file system`)."""
    names = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
             errno.EACCES: "permission denied", errno.EPERM: "operation not permitted", errno.EIO: "I/O error"}
    return names.get(exc.errno or -1, exc.strerror or type(exc).__name__)


def as_connector_error(exc: BaseException, doing: str) -> ConnectorError:
    """The documented error for `exc`: itself when it is one, StoreError for the storage OS errors
    (disk full, read-only), InternalError otherwise."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return StoreError(f"{doing}: {storage_problem(exc)}")
    return InternalError.wrap(exc, doing)
