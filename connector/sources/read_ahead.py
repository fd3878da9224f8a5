"""A streamed response body read by a thread while the caller parses what already arrived.

Why: a Bulk API 2.0 result set is CSV streamed over one connection, and the connector parses it
as it reads. Reading and parsing in one thread made the two ends take turns: while the connector
parsed, nobody read the socket, so the server (the sandbox, on the same two cores, or a real org
behind a long round trip) waited on a full buffer; while it read, the parser waited. Measured at
100,000 cases, neither side used more than two thirds of a core for the sixteen seconds of the
download. A thread that only reads (the socket and TLS release the GIL) keeps up to `depth`
chunks ready, so the server sends at its pace and the parser parses at its own.

What is read is exactly what the body holds, in order; an error while reading (a connection cut
short) is raised to the parser at the point it reached, as it was without the thread.
"""

from __future__ import annotations

import io
import queue
import threading
from typing import Any

_EOF = b""


class ReadAhead(io.RawIOBase):
    """`raw` (anything with `read(n)`) read ahead by a daemon thread into at most `depth` chunks."""

    def __init__(self, raw: Any, *, chunk: int = 256 * 1024, depth: int = 16):
        super().__init__()
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._buffer = b""
        self._at = 0
        self._done = False
        self._thread = threading.Thread(target=self._fill, args=(raw, chunk), name="htcds-read-ahead", daemon=True)
        self._thread.start()

    def _fill(self, raw: Any, chunk: int) -> None:
        try:
            while not self._stopped.is_set():
                data = raw.read(chunk)
                if not data:
                    break
                self._put(bytes(data))
            self._put(_EOF)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised where it reads
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stopped.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, into: Any) -> int:
        if self._at >= len(self._buffer):
            if self._done:
                return 0
            item = self._chunks.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if item == _EOF:
                self._done = True
                return 0
            self._buffer, self._at = item, 0
        size = min(len(into), len(self._buffer) - self._at)
        into[:size] = self._buffer[self._at : self._at + size]
        self._at += size
        return size

    def close(self) -> None:
        """Stop reading ahead and wait (briefly) for the thread to leave the body, so the caller's
        closing of the response does not race a read still in progress; a read stalled on the
        network is left to the response's own timeout."""
        self._stopped.set()
        self._thread.join(timeout=2)
        super().close()
