"""Content-addressed file storage: `objects/<sha256[:2]>/<sha256>`, written via `tmp/` and renamed.

Why content-addressed: the only path component is a hash the receiver computed itself, so nothing
a request says can reach the file system; the same file in two releases is stored once; and a
retried write of the same bytes is harmless. Files are written only after every check passed
(`tmp/` is the staging area, emptied on failure), so a refused upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ObjectStore:
    def __init__(self, root: Path):
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.objects / sha256[:2] / sha256

    def put(self, content: bytes) -> str:
        """Store bytes (durably) and return their SHA-256."""
        digest = hashlib.sha256(content).hexdigest()
        target = self.path(digest)
        if target.is_file() and target.stat().st_size == len(content):
            return digest
        fd, staging = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            target.parent.mkdir(exist_ok=True)
            os.replace(staging, target)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)
        return digest

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def count(self) -> int:
        return sum(1 for p in self.objects.rglob("*") if p.is_file())


__all__ = ["ObjectStore"]
