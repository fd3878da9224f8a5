"""`ReadAhead`: a body read by a thread gives the reader exactly its bytes, in order, with any
read error raised where the reader reaches it; it reads ahead, boundedly, and stops on close."""

from __future__ import annotations

import io
import threading
import time

import pytest

from connector.sources.read_ahead import ReadAhead


class Body:
    """A response body: `data` in reads of at most `step` bytes, then `error` (if any)."""

    def __init__(self, data: bytes, step: int = 5, error: Exception | None = None):
        self.data, self.step, self.error = data, step, error
        self.at = 0
        self.reads = 0

    def read(self, n: int) -> bytes:
        self.reads += 1
        if self.at >= len(self.data):
            if self.error is not None:
                raise self.error
            return b""
        piece = self.data[self.at : self.at + min(n, self.step)]
        self.at += len(piece)
        return piece


def test_the_reader_gets_every_byte_in_order():
    data = ("Id,Name\n" + "".join(f"{i},é{i}\n" for i in range(2000))).encode()
    body = ReadAhead(Body(data, step=7), chunk=11, depth=2)
    text = io.TextIOWrapper(io.BufferedReader(body), encoding="utf-8", newline="")
    assert text.read() == data.decode()
    body.close()


def test_an_error_while_reading_reaches_the_reader_after_the_bytes_before_it():
    body = ReadAhead(Body(b"abcdefghij", step=4, error=ConnectionResetError("cut short")), chunk=4, depth=2)
    reader = io.BufferedReader(body)
    got = b""
    with pytest.raises(ConnectionResetError, match="cut short"):
        while True:
            piece = reader.read1(3)
            if not piece:
                break
            got += piece
    assert got == b"abcdefghij"


def test_it_reads_ahead_of_the_reader_but_only_depth_chunks():
    raw = Body(b"x" * 1000, step=10)
    body = ReadAhead(raw, chunk=10, depth=3)
    for _ in range(100):
        if raw.reads >= 4:
            break
        time.sleep(0.01)
    time.sleep(0.05)
    # three chunks queued and a fourth read, waiting for room: nothing consumed yet
    assert raw.reads == 4 and raw.at == 40
    body.close()


def test_close_ends_the_reading_thread():
    raw = Body(b"y" * 10_000, step=10)
    body = ReadAhead(raw, chunk=10, depth=1)
    body.close()
    threads = [t for t in threading.enumerate() if t.name == "htcds-read-ahead"]
    for t in threads:
        t.join(timeout=2)
    assert not any(t.is_alive() for t in threads)
    assert raw.at < 10_000
