"""Folder destination: `<path>/<partner>/<release id>/`, written beside and renamed into place.

A reader of the folder never sees a half release: files go into a hidden temporary folder on the
same file system, are flushed to disk, and the folder is renamed in one step.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from connector.destinations.base import Destination, PublishError, PublishResult
from connector.records import Problem
from connector.faults import fault_point
from connector.release import MANIFEST_FILE, Bundle


class FolderDestination(Destination):
    def __init__(self, root: Path):
        self.root = root

    def describe(self) -> str:
        return f"folder {self.root}"

    def check(self) -> list[Problem]:
        probe = self.root if self.root.exists() else self.root.parent
        if not probe.exists() or not os.access(probe, os.W_OK):
            return [Problem("destination.path", f"{self.root} cannot be written", hint="create it or fix its permissions")]
        return []

    def publish(self, bundle: Bundle) -> PublishResult:
        target = self.root / bundle.partner / bundle.release_id
        if (target / MANIFEST_FILE).is_file():
            return PublishResult(bundle.release_id, str(target), published=False)
        renamed = False  # until the rename, the files are in a private staging folder (mode 0700)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.glob(f".{bundle.release_id}.*"):  # left by a crash; the job lock
                shutil.rmtree(stale, ignore_errors=True)  # means no other run is writing it now
            staging = Path(tempfile.mkdtemp(prefix=f".{bundle.release_id}.", dir=target.parent))
            try:
                for name, content in bundle.files.items():
                    if name == MANIFEST_FILE:
                        continue
                    fault_point("release.write")
                    _write(staging / name, content)
                fault_point("release.write")
                _write(staging / MANIFEST_FILE, bundle.files[MANIFEST_FILE])  # last: marks the bundle whole
                os.chmod(staging, 0o755)  # mkdtemp makes it private; a release is meant to be read
                if target.exists():  # a crashed earlier attempt left an incomplete folder: replace it
                    shutil.rmtree(target)
                os.rename(staging, target)
                renamed = True
                _fsync_dir(target.parent)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        except OSError as exc:
            raise PublishError(f"cannot write release {bundle.release_id} to {target}: {exc.strerror}", sent=renamed) from None
        return PublishResult(bundle.release_id, str(target), published=True)


def _write(path: Path, content: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
