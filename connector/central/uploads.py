"""Receiving an upload without holding it: multipart parts streamed to a staging folder on disk,
hashed on the way, under a per-request and a global in-flight byte limit.

Why: eight partners uploading 60 MB each at once must not cost the receiver 480 MB of memory.
Each part goes to `staging/<request>/<name>` in 64 KiB pieces while its SHA-256 and size are
computed, so the manifest's checksums can be compared before any file is read into memory; only a
release that passes that comparison is loaded and checked, and at most `check_slots` of them at
once. All requests share one `UploadBudget`: bytes in flight (counted as they are read, after the
token was checked) beyond its limit are answered 503 with Retry-After, which the connector's
central_api destination retries.

    budget = UploadBudget(256 * MB)
    with Staging(data_dir / "staging") as staging:
        parts = await receive_parts(request, staging, known=known_files())
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector.central.validate import FILE_NAME, MAX_FILES, UploadRefused

CHUNK = 64 * 1024
_BODY_METHODS = (b"POST", b"PUT", b"PATCH")


class UploadBudget:
    """Bytes of request bodies in flight across all requests, against one limit."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        with self._lock:
            if self.in_flight + n > self.limit:
                return False
            self.in_flight += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.in_flight = max(0, self.in_flight - n)


def _refusal(status: int, error: str, reason: str, hint: str | None, extra: dict[str, str] | None = None) -> UploadRefused:
    return UploadRefused(status, error, [reason], hint=hint, headers=extra)


class BodyLimits:
    """ASGI middleware: a body above `max_bytes` gets 413 (at once on Content-Length, else as it
    arrives); bodies that would take the shared `budget` over its limit get 503 + Retry-After."""

    def __init__(self, app: ASGIApp, max_bytes: int, budget: UploadBudget):
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "").encode() not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length: int | None = None
        if b"content-length" in headers:
            try:
                length = int(headers[b"content-length"])
            except ValueError:
                length = self.max_bytes + 1
        if length is not None and length > self.max_bytes:
            await _send_error(scope, receive, send, 413, "request body too large", f"the limit is {self.max_bytes} bytes")
            return
        # The budget counts bytes as they are read, not as declared: a request is authenticated
        # before its body is read, so a client without a token (or one declaring a large
        # Content-Length and sending nothing) cannot take the budget from the partners.
        reserved = 0
        seen = 0

        async def limited() -> Message:
            nonlocal seen, reserved
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                seen += size
                if seen > self.max_bytes:
                    raise _refusal(413, "request body too large", f"the limit is {self.max_bytes} bytes", None)
                if seen > reserved:
                    if not self.budget.reserve(seen - reserved):
                        raise _refusal(503, "the receiver is busy with other uploads", "too many bytes in flight; retry later", None, {"Retry-After": "5"})
                    reserved = seen
            return message

        try:
            await self.app(scope, limited, send)
        finally:
            self.budget.release(reserved)


async def _send_error(scope: Scope, receive: Receive, send: Send, status: int, error: str, reason: str, extra: dict[str, str] | None = None) -> None:
    from starlette.responses import JSONResponse

    response = JSONResponse({"detail": {"error": error, "reasons": [reason], "hint": None}}, status_code=status, headers=extra)
    await response(scope, receive, send)


class Staging:
    """A private folder for one request's parts, removed on exit whatever happened."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.path = Path(tempfile.mkdtemp(dir=root, prefix="upload-"))

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass
class Part:
    """One received file: where it is staged, its SHA-256 and size (computed while streaming)."""

    name: str
    path: Path
    sha256: str
    size: int

    def read(self) -> bytes:
        return self.path.read_bytes()


class _PartWriter:
    """python-multipart callbacks that write each `files` part to its own staging file."""

    def __init__(self, staging: Staging, known: Callable[[str], list[str]]):
        self.staging = staging
        self.known = known
        self.parts: dict[str, Part] = {}
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._file: Any = None
        self._digest: Any = None
        self._name = ""
        self._size = 0

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda data, start, end: self._extend("_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._extend("_value", data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def _extend(self, attribute: str, data: bytes) -> None:
        setattr(self, attribute, getattr(self, attribute) + data)

    def part_begin(self) -> None:
        self._headers = {}

    def header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        field = options.get(b"name", b"").decode("latin-1")
        filename = options.get(b"filename")
        if field != "files" or filename is None:
            raise UploadRefused(400, "only `files` parts with a filename are accepted", [f"unexpected part {field[:40]!r}"])
        name = filename.decode("utf-8", "replace")
        if not FILE_NAME.match(name):
            raise UploadRefused(422, "file names not allowed", [f"{name[:100]!r} does not match {FILE_NAME.pattern}"])
        unknown = self.known(name)
        if unknown:
            raise UploadRefused(422, "files that are not part of a release", unknown, hint="upload exactly the files the connector wrote to the release folder")
        if name in self.parts or name == self._name:
            raise UploadRefused(400, "a file was sent twice", [name])
        if len(self.parts) >= MAX_FILES:
            raise UploadRefused(422, "too many files", [f"a release has at most {MAX_FILES}"])
        self._name = name
        self._size = 0
        self._digest = hashlib.sha256()
        self._file = open(self.staging.path / name, "wb")  # noqa: SIM115 - closed in part_end / close

    def part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        self._digest.update(piece)
        self._size += len(piece)
        self._file.write(piece)

    def part_end(self) -> None:
        self._file.close()
        self._file = None
        self.parts[self._name] = Part(self._name, self.staging.path / self._name, self._digest.hexdigest(), self._size)
        self._name = ""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def receive_parts(request: Request, staging: Staging, known: Callable[[str], list[str]]) -> dict[str, Part]:
    """Stream a multipart/form-data body into `staging`, one file per `files` part. Raises
    UploadRefused (400/415/422) for a body that is not a release upload."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data":
        raise UploadRefused(415, "uploads are multipart/form-data", [f"got {kind.decode('latin-1') or 'no content type'}"], hint="send one `files` part per file")
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadRefused(400, "the multipart body cannot be parsed", ["no boundary in Content-Type"])
    writer = _PartWriter(staging, known)
    parser = MultipartParser(boundary, writer.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            for start in range(0, len(chunk), CHUNK):
                parser.write(chunk[start:start + CHUNK])
        parser.finalize()
    except UploadRefused:  # a refused part, or the body limits (raised from receive())
        raise
    except OSError as exc:  # the staging disk, not the client: full, read-only, gone
        raise UploadRefused(503, "the receiver could not stage the upload", [exc.strerror or type(exc).__name__],
                            hint="retry later; the central team should check the receiver's disk", headers={"Retry-After": "60"}) from None
    except Exception as exc:  # noqa: BLE001 - any multipart parse failure is the client's
        raise UploadRefused(400, "the multipart body cannot be parsed", [type(exc).__name__]) from None
    finally:
        writer.close()
    if writer._name:
        raise UploadRefused(400, "the multipart body cannot be parsed", ["the body ended inside a part"])
    if not writer.parts:
        raise UploadRefused(400, "no files were uploaded", hint="send one `files` part per file of the release folder")
    return writer.parts


def precheck(parts: dict[str, Part], max_manifest_bytes: int = 1024 * 1024) -> None:
    """Compare each staged file's streamed SHA-256 and size with manifest.json before anything is
    read into memory: a body that is not the release its manifest describes is refused here, at
    the cost of reading the manifest only. check_upload repeats every check on the bytes."""
    manifest_part = parts.get("manifest.json")
    if manifest_part is None or manifest_part.size > max_manifest_bytes:
        return  # check_upload names what is wrong; a huge manifest cannot be a connector's
    try:
        import json

        listed = json.loads(manifest_part.read().decode("utf-8")).get("files")
    except (UnicodeDecodeError, ValueError, AttributeError):
        return
    if not isinstance(listed, dict):
        return
    reasons = []
    for name, part in sorted(parts.items()):
        entry = listed.get(name)
        if name == "manifest.json" or not isinstance(entry, dict):
            continue
        if entry.get("sha256") != part.sha256:
            reasons.append(f"{name}: SHA-256 {part.sha256} does not match the manifest's {str(entry.get('sha256'))[:64]!r} (changed or truncated in transit?)")
        if entry.get("bytes") != part.size:
            reasons.append(f"{name}: {part.size} bytes, the manifest says {str(entry.get('bytes'))[:20]!r}")
    if reasons:
        raise UploadRefused(422, "manifest checks failed", reasons, hint="publish the release folder again exactly as the connector wrote it")


__all__ = ["BodyLimits", "Part", "Staging", "UploadBudget", "precheck", "receive_parts"]
