"""WARC records -> HTML pages, text documents or rejections, for ``stages.readers`` to
turn into rows.

A ``response`` record with an HTTP 200 HTML page is a page; a ``conversion`` record (what
Common Crawl's WET files hold: the extracted plain text of a page, UTF-8) is a text
document, so WET files read through the same parser, and a WET file named ``.warc.gz``
still gives its documents.

The WARC parser is our own rather than warcio's so that it can reject one record with a
wrong ``Content-Length`` or a broken header and resynchronise on the next ``WARC/``
line, keep the records before a corrupt gzip member, and name each record by the byte
offset of its gzip member (the offset Common Crawl's index uses).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from stages.byte_streams import (
    LINE_MAX_BYTES,
    REASON_TOO_LARGE,
    REASON_TRUNCATED,
    ByteReader,
    ReadError,
    declared_charsets,
)

REASON_MALFORMED_WARC = "malformed_warc_record"
REASON_MALFORMED_HTTP = "malformed_http_response"

_HTTP_HEAD_MAX_BYTES = 64 << 10
_WARC_HEADER_MAX_LINES = 512

_WARC_LINE = re.compile(rb"WARC/\d")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_HTTP_STATUS = re.compile(rb"HTTP/\d(?:\.\d)?\s+(\d{3})")
_HEADER_CHARSET_VALUE = re.compile(r"charset\s*=\s*[\"']?([\w.:+-]+)", re.I)


@dataclass(frozen=True, kw_only=True, slots=True)
class WarcRecord:
    """One parser outcome: an HTML page (``reason`` is None) or a rejected record."""

    record: str
    """Where the record starts, ``offset:<n>`` (``<member>+<inner>`` inside a gzip member)."""
    url: str | None = None
    """``WARC-Target-URI`` without angle brackets, as stored (not yet cleaned for Arrow)."""
    date: str | None = None
    """``WARC-Date`` as ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, or None if absent or unparsable."""
    payload: bytes = b""
    """The HTTP body with transfer and content codings undone (pages only)."""
    declared: tuple[str, ...] = ()
    """Charsets the HTTP header and the page's ``<meta>`` declare, header first."""
    media: str = "html"
    """``html`` (a response's page) or ``text`` (a conversion record's plain text)."""
    reason: str | None = None
    """Why the record is rejected; None for a page."""
    score: float | None = None
    """The rejection's measure (the block size for ``too_large``)."""


def read_warc(
    reader: ByteReader, max_doc_bytes: int, stop: int | None = None
) -> Iterator[WarcRecord]:
    """Documents are ``response`` records holding an HTTP 200 HTML page and
    ``conversion`` records (plain text); every other record is skipped silently. A broken
    record costs one rejection and a resync; a broken stream costs one rejection, then
    reading goes on where the source can (a WARC gzip source: the next good member) or
    the file ends there (a plain gzip or zstd stream).

    ``stop`` (a byte-range piece of a plain file): the records whose ``WARC/`` line
    starts before it; the reader was placed at the first line that starts a record."""
    while True:
        record: str | None = None
        try:
            while True:
                record, reader.keep_from = None, None
                start = reader.tell()
                if stop is not None and start >= stop:
                    return
                line = reader.readline(LINE_MAX_BYTES)
                if not line:
                    return
                if not line.strip():
                    continue
                record = f"offset:{reader.locate(start)}"
                reader.keep_from = start
                parsed = _warc_headers(reader, line)
                if parsed is None:
                    yield WarcRecord(record=record, reason=REASON_MALFORMED_WARC)
                    _resync(reader)
                    continue
                yield from _warc_record(reader, parsed[0], parsed[1], record, max_doc_bytes)
        except ReadError as err:
            # a broken gzip member is named by its own offset, not by the record that
            # was being read into it: the same name whichever piece reads it
            if err.offset is not None:
                where = f"offset:{err.offset}"
            else:
                where = record or f"offset:{reader.tell()}"
            yield WarcRecord(record=where, reason=err.reason, score=err.score)
            if not reader.resume():
                return


def start_at_record(reader: ByteReader, start: int) -> None:
    """Place a reader opened one byte before ``start`` (a piece of a plain WARC file) on
    the first line at or after ``start`` that starts a record: the record whose line
    starts before ``start`` is the previous piece's, and ``_resync`` is the same rule
    reading uses after a broken record."""
    if reader.peek(1) == b"\n":
        reader.skip(1)
    else:
        reader.skip_line()
    _resync(reader)


def _warc_headers(reader: ByteReader, first_line: bytes) -> tuple[dict[str, str], int] | None:
    """Header fields (lower-case names) and Content-Length, or None if malformed."""
    if not _WARC_LINE.match(first_line):
        return None
    headers: dict[str, str] = {}
    name = ""
    for _ in range(_WARC_HEADER_MAX_LINES):
        line = reader.readline(LINE_MAX_BYTES)
        if not line:
            raise ReadError(REASON_TRUNCATED)
        if not line.endswith(b"\n"):
            return None
        text = line.rstrip(b"\r\n")
        if not text:
            length = headers.get("content-length", "")
            return (headers, int(length)) if length.isdigit() else None
        if text[:1] in (b" ", b"\t") and name:
            headers[name] += " " + text.strip().decode("utf-8", "replace")
            continue
        key, colon, value = text.partition(b":")
        if not colon or not key.strip():
            return None
        name = key.strip().decode("latin-1").lower()
        headers[name] = value.strip().decode("utf-8", "replace")
    return None


def _warc_record(
    reader: ByteReader, headers: dict[str, str], length: int, record: str, max_doc_bytes: int
) -> Iterator[WarcRecord]:
    block_type = headers.get("content-type", "application/http").lower()
    is_response = headers.get("warc-type", "").lower() == "response" and block_type.startswith(
        "application/http"
    )
    is_conversion = headers.get("warc-type", "").lower() == "conversion"
    url = headers.get("warc-target-uri", "").strip().strip("<>") or None
    about = {"record": record, "url": url, "date": _iso_date(headers)}
    block_start = reader.tell()
    if length > max_doc_bytes + _HTTP_HEAD_MAX_BYTES:  # stream past it, never hold it
        is_page = is_response and _http_page(reader.peek(_HTTP_HEAD_MAX_BYTES)) is not None
        is_page = is_page or is_conversion
        if reader.skip(length) < length:
            raise ReadError(REASON_TRUNCATED)
        terminated = _terminated(reader)
        junk_at = _junk_after(reader)
        if junk_at is not None and not terminated:
            yield WarcRecord(**about, reason=REASON_MALFORMED_WARC)
            _resync(reader)
            return
        if is_page:
            yield WarcRecord(**about, reason=REASON_TOO_LARGE, score=float(length))
        if junk_at is not None:
            yield from _junk(reader, junk_at)
        return
    block = reader.peek(length)
    if len(block) < length:
        if not _WARC_LINE.search(block):
            raise ReadError(REASON_TRUNCATED)
        yield WarcRecord(**about, reason=REASON_MALFORMED_WARC)
        _resync(reader)
        return
    reader.skip(length)
    terminated = _terminated(reader)
    junk_at = _junk_after(reader)
    if junk_at is not None and not terminated:
        # wrong Content-Length: rescan this block for a record
        yield WarcRecord(**about, reason=REASON_MALFORMED_WARC)
        reader.seek(block_start)
        _resync(reader)
        return
    if is_response:
        yield from _page(block, about, max_doc_bytes)
    elif is_conversion:
        charset = _HEADER_CHARSET_VALUE.search(block_type)
        declared = (charset.group(1),) if charset else ("utf-8",)
        yield WarcRecord(**about, payload=block, declared=declared, media="text")
    if junk_at is not None:  # a whole record, then bytes that are no record
        yield from _junk(reader, junk_at)


def _page(block: bytes, about: dict, max_doc_bytes: int) -> Iterator[WarcRecord]:
    page = _http_page(block)
    if page is None:
        yield WarcRecord(**about, reason=REASON_MALFORMED_HTTP)
        return
    status, http, body_start = page
    if status == 200 and _is_html(http.get("content-type"), block[body_start:]):
        payload = _http_payload(block[body_start:], http, max_doc_bytes)
        declared = tuple(declared_charsets(http.get("content-type"), payload))
        yield WarcRecord(**about, payload=payload, declared=declared)


def _terminated(reader: ByteReader) -> bool:
    """Whether the block is followed by the blank line that ends a record (``CRLF CRLF``,
    or bare newlines). That tells a record with junk after it (keep the record) from one
    whose Content-Length is wrong (its block runs on or stops short)."""
    try:
        head = reader.peek(4)
    except ReadError:
        return True  # the record itself is whole; the next one reports the damage
    return not head or head.startswith((b"\r\n\r\n", b"\n\n", b"\r\n\n"))


def _junk_after(reader: ByteReader) -> int | None:
    """After a record block: skip blank lines up to the next ``WARC/`` line or the end
    (None), or return where the first other line starts, having read that line."""
    while True:
        try:
            head = reader.peek(8)
        except ReadError:
            return None  # the record itself is whole; the next one reports the damage
        if not head or _WARC_LINE.match(head):
            return None
        start = reader.tell()
        if reader.readline(LINE_MAX_BYTES).strip():
            return start


def _junk(reader: ByteReader, start: int) -> Iterator[WarcRecord]:
    """Bytes between records that are no record: one rejection, then the next record."""
    yield WarcRecord(record=f"offset:{reader.locate(start)}", reason=REASON_MALFORMED_WARC)
    _resync(reader)


def _resync(reader: ByteReader) -> None:
    """Skip to the next line that starts a WARC record."""
    reader.keep_from = None
    at_line_start = True
    while True:
        start = reader.tell()
        line = reader.readline(LINE_MAX_BYTES)
        if not line:
            return
        if at_line_start and _WARC_LINE.match(line):
            reader.seek(start)
            return
        at_line_start = line.endswith(b"\n")


def _http_page(block: bytes) -> tuple[int, dict[str, str], int] | None:
    """``(status, headers, body offset)``, or None if the HTTP head is broken."""
    status = _HTTP_STATUS.match(block)
    blank = _BLANK_LINE.search(block, 0, _HTTP_HEAD_MAX_BYTES)
    if status is None or blank is None:
        return None
    head_end = blank.start()
    headers: dict[str, str] = {}
    for line in block[:head_end].splitlines()[1:]:
        key, colon, value = line.partition(b":")
        if colon:
            headers[key.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return int(status.group(1)), headers, blank.end()


def _is_html(content_type: str | None, body: bytes) -> bool:
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        return media in ("text/html", "application/xhtml+xml")
    start = body[:256].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _http_payload(body: bytes, http: dict[str, str], max_doc_bytes: int) -> bytes:
    """Undo transfer and content codings a crawler stored as sent (wget keeps chunked
    bodies); Common Crawl renames the headers of codings it already removed."""
    if "chunked" in http.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    coding = http.get("content-encoding", "").strip().lower()
    if coding in ("gzip", "x-gzip", "deflate") and body[:2] in (b"\x1f\x8b", b"\x78\x9c"):
        inflater = zlib.decompressobj(47)  # gzip or zlib header
        try:
            return inflater.decompress(body, max_doc_bytes + 1)
        except zlib.error:
            return body  # not what the header claims (ClueWeb09); judge the bytes as they are
    return body


def _dechunk(body: bytes) -> bytes:
    out, index = bytearray(), 0
    while (newline := body.find(b"\n", index)) >= 0:
        try:
            size = int(body[index:newline].split(b";", 1)[0].strip(), 16)
        except ValueError:
            return body if index == 0 else bytes(out)
        if size == 0:
            break
        out += body[newline + 1 : newline + 1 + size]
        index = newline + 1 + size
        index += 2 if body.startswith(b"\r\n", index) else int(body.startswith(b"\n", index))
    return bytes(out) if out or index else body


def _iso_date(headers: dict[str, str]) -> str | None:
    try:
        moment = datetime.fromisoformat(headers.get("warc-date", "").strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
