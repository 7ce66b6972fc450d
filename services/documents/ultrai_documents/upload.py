"""A streamed multipart/form-data upload: one file field, written to disk as it arrives.

The file's bytes are counted (and hashed) as they come off the socket and the request is refused
with 413 the moment they pass the limit; the rest of the body is never read. python-multipart
(0.0.27 or later) parses, with caps on header count and size per part; on top of it we cap the
number of parts and the size of any non-file field. Nothing here ever uses the client's file
name as a path: the temporary file has a random name, and the display name is cleaned.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from shared.errors import ProblemError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FLUSH_BYTES = 256 * 1024
FILE_FIELD = "file"


@dataclass
class Upload:
    path: Path
    size: int
    sha256: str
    filename: str | None


class _State:
    def __init__(self, max_bytes: int, max_parts: int, max_field_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_parts = max_parts
        self.max_field_bytes = max_field_bytes
        self.parts = 0
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.in_file = False
        self.field_bytes = 0
        self.file_seen = False
        self.file_done = False
        self.filename: str | None = None
        self.size = 0
        self.digest = hashlib.sha256()
        self.pending = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    # python-multipart callbacks (synchronous; they only touch memory).
    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise ProblemError(400, f"The form has more than {self.max_parts} parts; send only the field 'file'.")
        self.headers = {}
        self.in_file = False
        self.field_bytes = 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).strip().lower()] = bytes(self.header_value).strip()
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self.headers.get(b"content-disposition"))
        if disposition != b"form-data":
            raise ProblemError(400, "Each part of the form needs a Content-Disposition of form-data.")
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD:
            if self.file_seen:
                raise ProblemError(400, "Send exactly one file in the field 'file'.")
            self.file_seen = True
            self.in_file = True
            raw = options.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw is not None else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        length = end - start
        if self.in_file:
            self.size += length
            if self.size > self.max_bytes:
                raise ProblemError(413, f"The file is larger than the limit of {self.max_bytes:,} bytes.")
            chunk = data[start:end]
            self.digest.update(chunk)
            self.pending += chunk
        else:
            self.field_bytes += length
            if self.field_bytes > self.max_field_bytes:
                raise ProblemError(400, f"A form field is larger than the limit of {self.max_field_bytes:,} bytes.")

    def on_part_end(self) -> None:
        if self.in_file:
            self.file_done = True
            self.in_file = False


async def receive_upload(
    content_type: str,
    body: AsyncIterator[bytes],
    directory: Path,
    *,
    max_bytes: int,
    max_parts: int,
    max_field_bytes: int,
) -> Upload:
    """The file of a multipart/form-data ``body`` (with this Content-Type), written into ``directory``."""
    media, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media != b"multipart/form-data" or not boundary:
        raise ProblemError(
            415 if media != b"multipart/form-data" else 400,
            "Upload the document as multipart/form-data with the file in the field 'file'.",
        )
    if len(boundary) > 200:
        raise ProblemError(400, "The multipart boundary is too long.")
    state = _State(max_bytes, max_parts, max_field_bytes)
    parser = MultipartParser(boundary, state.callbacks(), max_header_count=8, max_header_size=4096)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    path = directory / f"upload-{secrets.token_hex(16)}.bin"
    fh = await asyncio.to_thread(open, path, "wb")
    try:
        await _write_file(body, parser, state, fh)
        await asyncio.to_thread(fh.close)
        if not state.file_seen or not state.file_done:
            raise ProblemError(400, "The form has no complete file in the field 'file'.")
        if state.size == 0:
            raise ProblemError(422, "The file is empty.")
    except BaseException:
        await asyncio.to_thread(fh.close)
        path.unlink(missing_ok=True)
        raise
    return Upload(path=path, size=state.size, sha256=state.digest.hexdigest(), filename=state.filename)


async def _write_file(body: AsyncIterator[bytes], parser: MultipartParser, state: _State, fh: IO[bytes]) -> None:
    """Parse the body as it arrives; the file's bytes go to ``fh`` in blocks of FLUSH_BYTES."""
    try:
        async for chunk in body:
            parser.write(chunk)
            if len(state.pending) >= FLUSH_BYTES:
                # Written as it is (no copy): nothing appends to it until the write is done.
                await asyncio.to_thread(fh.write, state.pending)
                state.pending.clear()
        parser.finalize()
    except FormParserError:
        raise ProblemError(400, "The multipart body is malformed.") from None
    except ClientDisconnect:
        # The client went away mid-body: nothing to store, no one to answer, not our error.
        raise ProblemError(400, "The upload was interrupted before it was complete.") from None
    if state.pending:
        await asyncio.to_thread(fh.write, state.pending)
        state.pending.clear()


# ------------------------------------------------------------------------------------- file names

_BIDI_AND_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def clean_filename(raw: str | None, max_chars: int = 255) -> str:
    """A display name: last path component, no control/bidi characters, bounded; never a path."""
    if not raw:
        return "document"
    name = unicodedata.normalize("NFC", raw)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _BIDI_AND_INVISIBLE.sub("", name).strip().strip(".")
    if not name:
        return "document"
    if len(name) > max_chars:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            name = stem[: max_chars - len(ext) - 1] + "." + ext
        else:
            name = name[:max_chars]
    return name


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the RFC 5987/6266 UTF-8 form."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\;%' else "_" for ch in name) or "document"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
