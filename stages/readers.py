"""Input files -> document rows (``DOCUMENT_SCHEMA``): WARC, HTML, JSONL, Parquet and
plain text or source files.

Bad input never raises: a broken file or record becomes a row whose ``drop_reason``
names the problem (``drop_stage = "read"``), so the ledger counts it. Memory stays
bounded by ``max_doc_bytes``: files are read as streams, gzip is inflated in chunks
with a cap on output, and a record larger than the cap is skipped, never held.

The WARC parser is our own rather than warcio's so that it can reject one record with a
wrong ``Content-Length`` or a broken header and resynchronise on the next ``WARC/``
line, keep the records before a corrupt gzip member, and name each record by the byte
offset of its gzip member (the offset Common Crawl's index uses).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field

from stages.base import (
    DOCUMENT_SCHEMA,
    DROP_REASON,
    DROP_SCORE,
    DROP_STAGE,
    ERROR_PREFIX,
    StageConfig,
)

STAGE_NAME = "read"
REASON_CORRUPT_GZIP = "corrupt_gzip"
REASON_TRUNCATED = "truncated_record"
REASON_MALFORMED_WARC = "malformed_warc_record"
REASON_MALFORMED_HTTP = "malformed_http_response"
REASON_TOO_LARGE = "too_large"
REASON_BINARY = "binary_content"
REASON_INVALID_ENCODING = "invalid_encoding"
REASON_EMPTY = "empty_document"
REASON_BAD_JSON = "malformed_json"
REASON_MISSING_FIELD = "missing_text_field"
REASON_UNSUPPORTED = "unsupported_format"

CODE_LANGUAGES = {
    ".py": "python", ".go": "go", ".rs": "rust", ".c": "c", ".h": "c", ".cpp": "cpp",
    ".cc": "cpp", ".hpp": "cpp", ".js": "javascript", ".ts": "typescript",
    ".java": "java", ".rb": "ruby", ".sh": "shell",
}  # fmt: skip
TEXT_SUFFIXES = (".md", ".txt", ".rst")
_CONTAINER_SUFFIXES = {  # matched with endswith, case-insensitive
    ".warc.gz": "warc", ".html.gz": "html", ".htm.gz": "html", ".jsonl.gz": "jsonl",
    ".json.gz": "jsonl", ".warc": "warc", ".html": "html", ".htm": "html",
    ".jsonl": "jsonl", ".parquet": "parquet",
}  # fmt: skip

_CHUNK_BYTES = 1 << 20
_COMPACT_BYTES = 1 << 20
_LINE_MAX_BYTES = 64 << 10
_HTTP_HEAD_MAX_BYTES = 64 << 10
_WARC_HEADER_MAX_LINES = 512
_SNIFF_BYTES = 64 << 10  # binary / text-likeness is judged on the first 64 KiB
_META_SNIFF_BYTES = 16 << 10
_PARQUET_BATCH_ROWS = 256
_BOMB_DOCS = 10  # a gzip member may inflate to this many max_doc_bytes before the ratio test
_MAX_REPLACED_SHARE = 0.01  # a declared charset may leave 1% undecodable characters
_MIN_TEXT_SHARE = 0.85  # ASCII text share for the last-resort cp1252 decode
_MAX_CONTROL_SHARE = 0.03
_MAX_NUL_SHARE = 0.001

_WARC_LINE = re.compile(rb"WARC/\d")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_HTTP_STATUS = re.compile(rb"HTTP/\d(?:\.\d)?\s+(\d{3})")
_META_CHARSET = re.compile(rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([\w.:+-]+)", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:+-]+)", re.I)
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))
_ASCII_TEXT_BYTES = bytes([9, 10, 13, *range(32, 127)])
_BINARY_MAGIC = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"%PDF-", b"PK\x03\x04", b"\x1f\x8b")
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# WHATWG: these labels mean a superset in practice; latin-1 pages use cp1252's 0x80-0x9f.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "us-ascii": "cp1252", "ascii": "cp1252", "gb2312": "gb18030", "gbk": "gb18030",
    "x-gbk": "gb18030", "shift_jis": "cp932", "x-sjis": "cp932", "sjis": "cp932",
    "euc-kr": "cp949", "ks_c_5601-1987": "cp949", "tis-620": "cp874",
}  # fmt: skip
_ROW_FIELDS = tuple(n for n in DOCUMENT_SCHEMA.names if n not in ("shard", "ordinal"))


class ReaderConfig(StageConfig):
    text_field: str = "text"
    """Key (JSONL) or column (Parquet) that holds the document text."""
    id_field: str | None = None
    """Key or column whose value names the record ("id:<value>"); None uses the line/row."""
    url_field: str | None = "url"
    """Key or column holding the document URL in JSONL/Parquet; None or absent leaves it null."""
    max_doc_bytes: int = Field(default=10_000_000, gt=0)
    """Largest document (raw bytes) kept; larger ones are rejected ``too_large`` unread."""
    max_decompressed_ratio: float = Field(default=100.0, ge=1.0)
    """A gzip member inflating past 10x max_doc_bytes at a higher ratio is a bomb: the rest
    of its file becomes one too_large row instead of minutes of inflating."""


class _ReadError(Exception):
    """Stops the rest of a file: the stream cannot be trusted past this point."""

    def __init__(self, reason: str, score: float | None = None, offset: int | None = None):
        super().__init__(reason)
        self.reason, self.score, self.offset = reason, score, offset


def reader_kind(path: str) -> str | None:
    """The reader for ``path`` ("warc", "html", "jsonl", "parquet", "code", "text"), or
    None: the file lister skips what no reader understands."""
    lower = path.lower()
    for suffix, kind in _CONTAINER_SUFFIXES.items():
        if lower.endswith(suffix):
            return kind
    suffix = _suffix(lower)
    if suffix in CODE_LANGUAGES:
        return "code"
    return "text" if suffix in TEXT_SUFFIXES else None


def document_id(source: str, record: str, content: bytes) -> str:
    """Content-derived and location-derived, so a rerun on another machine (or with the
    data mounted elsewhere) gives the same ids; length prefixes keep parts unambiguous."""
    digest = hashlib.blake2b(digest_size=16)
    content_digest = hashlib.blake2b(content, digest_size=16).digest()
    for part in (source.encode("utf-8", "replace"), record.encode("utf-8", "replace")):
        digest.update(len(part).to_bytes(8, "little") + part)
    digest.update(content_digest)
    return digest.hexdigest()


def read_shard(
    paths: Sequence[tuple[str, str]], shard: int, filesystem: pafs.FileSystem, cfg: ReaderConfig
) -> pa.Table:
    """All documents (kept and rejected) of the ``(path, source)`` files, in file order."""
    rows = [row for path, source in paths for row in read_file(path, source, filesystem, cfg)]
    columns: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in _ROW_FIELDS}
    columns["shard"] = [shard] * len(rows)
    columns["ordinal"] = list(range(len(rows)))
    return pa.table({name: columns[name] for name in DOCUMENT_SCHEMA.names}, DOCUMENT_SCHEMA)


def read_file(
    path: str, source: str, filesystem: pafs.FileSystem, cfg: ReaderConfig
) -> Iterator[dict[str, Any]]:
    """Rows for one file; an unexpected exception ends the file with one ``error:`` row
    after the documents already yielded."""
    kind = reader_kind(path)
    try:
        if kind is None:
            yield _reject(source, "file", REASON_UNSUPPORTED)
        elif kind == "parquet":
            yield from _read_parquet(path, source, filesystem, cfg)
        else:
            with filesystem.open_input_stream(path, compression=None) as raw:
                gzipped = path.lower().endswith(".gz")
                reader = _Reader(_GzipSource(raw, cfg) if gzipped else _PlainSource(raw))
                if kind == "warc":
                    yield from _read_warc(reader, source, cfg)
                elif kind == "jsonl":
                    yield from _read_jsonl(reader, source, cfg)
                else:
                    yield _read_single(reader, source, kind, CODE_LANGUAGES.get(_suffix(path)), cfg)
    except _ReadError as err:
        record = "file" if err.offset is None else f"offset:{err.offset}"
        yield _reject(source, record, err.reason, err.score)
    except Exception as exc:  # one unreadable file must not end the shard
        yield _reject(source, "file", f"{ERROR_PREFIX}{type(exc).__name__}")


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    return name[name.rfind(".") :] if "." in name else ""


# --- rows --------------------------------------------------------------------------------


def _row(source: str, record: str, content: bytes, **fields: Any) -> dict[str, Any]:
    row = dict.fromkeys(_ROW_FIELDS)
    row.update(id=document_id(source, record, content), source=source, record=record, **fields)
    return row


def _reject(
    source: str, record: str, reason: str, score: float | None = None, content: bytes = b"",
    **fields: Any,
) -> dict[str, Any]:  # fmt: skip
    fields.update({DROP_REASON: reason, DROP_SCORE: score, DROP_STAGE: STAGE_NAME})
    return _row(source, record, content, **fields)


def _document(
    source: str, record: str, content: bytes, cfg: ReaderConfig, *, declared: Sequence[str] = (),
    **fields: Any,
) -> dict[str, Any]:  # fmt: skip
    """Size check, charset decoding and emptiness, shared by every byte-level reader."""
    if len(content) > cfg.max_doc_bytes:
        return _reject(source, record, REASON_TOO_LARGE, float(len(content)), **fields)
    text, reason = decode_bytes(content, declared)
    if text is None:
        return _reject(source, record, reason or REASON_INVALID_ENCODING, None, content, **fields)
    if not text.strip():
        return _reject(source, record, REASON_EMPTY, None, content, **fields)
    fields["html" if fields.get("format") == "html" else "text"] = text
    return _row(source, record, content, **fields)


def _field_row(
    source: str, record: str, raw: bytes, value: Any, url: Any, cfg: ReaderConfig
) -> dict[str, Any]:
    """One JSONL line or Parquet row whose fields are already parsed."""
    fields = {"format": "text", "url": _clean(url) if isinstance(url, str) else None}
    if isinstance(value, bytes):
        return _document(source, record, value, cfg, **fields)
    if not isinstance(value, str):
        return _reject(source, record, REASON_MISSING_FIELD, None, raw, **fields)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates from a JSON escape: Arrow cannot hold them
        return _reject(source, record, REASON_INVALID_ENCODING, None, raw, **fields)
    if size > cfg.max_doc_bytes:
        return _reject(source, record, REASON_TOO_LARGE, float(size), **fields)
    if not value.strip():
        return _reject(source, record, REASON_EMPTY, None, raw, **fields)
    return _row(source, record, raw, text=value, **fields)


def _clean(value: str) -> str:
    return value.encode("utf-8", "replace").decode("utf-8")


# --- decoding ----------------------------------------------------------------------------


def decode_bytes(data: bytes, declared: Sequence[str] = ()) -> tuple[str | None, str | None]:
    """``(text, None)`` or ``(None, reason)``. Order: BOM, strict UTF-8, the declared
    charsets, then cp1252 only for bytes that look like text, so binary junk is rejected
    rather than turned into mojibake."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec), None
            except UnicodeDecodeError:
                break
    if _looks_binary(data):
        return None, REASON_BINARY
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    for name in declared:
        label = name.strip().strip("\"'").lower()
        try:
            text = data.decode(_CHARSET_ALIASES.get(label, label), errors="replace")
        except (LookupError, UnicodeError, ValueError):  # unknown or non-text codec
            continue
        if text.count("\ufffd") <= len(text) * _MAX_REPLACED_SHARE:
            return text, None
    if _looks_like_text(data):
        return data.decode("cp1252", errors="replace"), None
    return None, REASON_INVALID_ENCODING


def _looks_binary(data: bytes) -> bool:
    sample = data[:_SNIFF_BYTES]
    if not sample:
        return False
    if sample.startswith(_BINARY_MAGIC):
        return True
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    nul_share = sample.count(0) / len(sample)
    return nul_share > _MAX_NUL_SHARE or controls / len(sample) > _MAX_CONTROL_SHARE


def _looks_like_text(data: bytes) -> bool:
    sample = data[:_SNIFF_BYTES]
    other = len(sample.translate(None, _ASCII_TEXT_BYTES))
    return bool(sample) and 1 - other / len(sample) >= _MIN_TEXT_SHARE


def _charsets(content_type: str | None, html: bytes) -> list[str]:
    """Declared charsets, HTTP header first (it overrides the page, as browsers do)."""
    found = [m.group(1) for m in [_HEADER_CHARSET.search(content_type or "")] if m]
    meta = _META_CHARSET.search(html[:_META_SNIFF_BYTES])
    if meta:
        found.append(meta.group(1).decode("ascii", "replace"))
    return found


# --- byte streams ------------------------------------------------------------------------


class _PlainSource:
    def __init__(self, raw: pa.NativeFile) -> None:
        self.raw = raw

    def next_chunk(self) -> bytes:
        return self.raw.read(_CHUNK_BYTES)

    def locate(self, position: int) -> str:
        return str(position)


class _GzipSource:
    """Inflates a (multi-member) gzip stream in bounded chunks and remembers where each
    member starts, so a record can be named by its compressed offset."""

    def __init__(self, raw: pa.NativeFile, cfg: ReaderConfig) -> None:
        self.raw, self.pending, self.pending_offset = raw, b"", 0
        self.inflater: Any = None
        self.max_member_bytes = _BOMB_DOCS * cfg.max_doc_bytes
        self.failed: _ReadError | None = None
        self.max_ratio = cfg.max_decompressed_ratio
        self.out_total = self.member_in = self.member_out = 0
        self.starts: list[int] = []  # decompressed position where each member begins
        self.offsets: list[int] = []  # compressed offset of that member

    def next_chunk(self) -> bytes:
        if self.failed is None:
            try:
                return self._inflate()
            except _ReadError as err:
                self.failed = err
        raise self.failed  # the stream stays broken once it broke

    def _inflate(self) -> bytes:
        while True:
            if not self.pending:
                self.pending = self.raw.read(_CHUNK_BYTES)
                if not self.pending:
                    if self.inflater is not None:
                        raise _ReadError(REASON_TRUNCATED, offset=self.offsets[-1])
                    return b""
            if self.inflater is None:
                self.inflater = zlib.decompressobj(31)
                self.starts.append(self.out_total)
                self.offsets.append(self.pending_offset)
                self.member_in = self.member_out = 0
            try:
                out = self.inflater.decompress(self.pending, _CHUNK_BYTES)
            except zlib.error as exc:
                raise _ReadError(REASON_CORRUPT_GZIP, offset=self.offsets[-1]) from exc
            eof = self.inflater.eof
            rest = self.inflater.unused_data if eof else self.inflater.unconsumed_tail
            used = len(self.pending) - len(rest)
            self.pending, self.pending_offset = rest, self.pending_offset + used
            self.member_in += used
            self.member_out += len(out)
            self.out_total += len(out)
            if eof:
                self.inflater = None
            if (
                self.member_out > self.max_member_bytes
                and self.member_out > self.max_ratio * self.member_in
            ):
                raise _ReadError(REASON_TOO_LARGE, float(self.member_out), self.offsets[-1])
            if out:
                return out

    def locate(self, position: int) -> str:
        index = bisect.bisect_right(self.starts, position) - 1
        if index < 0:
            return str(position)
        inner = position - self.starts[index]
        return f"{self.offsets[index]}+{inner}" if inner else str(self.offsets[index])


class _Reader:
    """Buffered reads over a chunk source: lines, peeks and skips, with a movable
    ``keep_from`` mark so a WARC record can be re-scanned after a bad Content-Length."""

    def __init__(self, source: _PlainSource | _GzipSource) -> None:
        self.source, self.buf, self.pos, self.base, self.eof = source, bytearray(), 0, 0, False
        self.keep_from: int | None = None

    def tell(self) -> int:
        return self.base + self.pos

    def seek(self, position: int) -> None:
        if not self.base <= position <= self.base + len(self.buf):
            raise ValueError("position no longer buffered")
        self.pos = position - self.base

    def locate(self, position: int) -> str:
        return self.source.locate(position)

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.source.next_chunk()
        if not chunk:
            self.eof = True
            return False
        keep = self.pos if self.keep_from is None else min(self.pos, self.keep_from - self.base)
        if keep > _COMPACT_BYTES:
            del self.buf[:keep]
            self.base += keep
            self.pos -= keep
        self.buf += chunk
        return True

    def peek(self, size: int) -> bytes:
        while len(self.buf) - self.pos < size and self._fill():
            pass
        return bytes(self.buf[self.pos : self.pos + size])

    def readline(self, limit: int) -> bytes:
        """Up to and including the next newline, or ``limit`` bytes, or what is left."""
        scanned = 0
        while True:
            end = self.buf.find(b"\n", self.pos + scanned, self.pos + limit)
            if end >= 0:
                end += 1
                break
            scanned = len(self.buf) - self.pos
            if scanned >= limit or not self._fill():
                end = min(len(self.buf), self.pos + limit)
                break
        line = bytes(self.buf[self.pos : end])
        self.pos = end
        return line

    def skip(self, size: int) -> int:
        """Discard ``size`` bytes without holding them; returns how many there were."""
        available = len(self.buf) - self.pos
        if size <= available:
            self.pos += size
            return size
        self.base += len(self.buf)
        self.buf, self.pos, self.keep_from = bytearray(), 0, None
        left = size - available
        while left:
            chunk = b"" if self.eof else self.source.next_chunk()
            if not chunk:
                self.eof = True
                return size - left
            taken = min(left, len(chunk))
            self.base += taken
            left -= taken
            self.buf = bytearray(chunk[taken:])
        return size

    def skip_line(self) -> int:
        skipped = 0
        while True:
            piece = self.readline(_LINE_MAX_BYTES)
            skipped += len(piece)
            if not piece or piece.endswith(b"\n"):
                return skipped


# --- formats -----------------------------------------------------------------------------


def _read_single(
    reader: _Reader, source: str, kind: str, code_language: str | None, cfg: ReaderConfig
) -> dict[str, Any]:
    """One document per file (HTML, text, code): read one byte past the cap and no more."""
    data = reader.peek(cfg.max_doc_bytes + 1)
    if len(data) > cfg.max_doc_bytes:
        return _reject(source, "file", REASON_TOO_LARGE, format=kind, code_language=code_language)
    declared = _charsets(None, data) if kind == "html" else ()
    return _document(
        source, "file", data, cfg, declared=declared, format=kind, code_language=code_language
    )


def _read_jsonl(reader: _Reader, source: str, cfg: ReaderConfig) -> Iterator[dict[str, Any]]:
    if not reader.peek(1):
        yield _reject(source, "file", REASON_EMPTY, format="text")
        return
    limit = 2 * cfg.max_doc_bytes + _LINE_MAX_BYTES  # JSON escapes can double the text
    number = 0
    while line := reader.readline(limit):
        number += 1
        record = f"line:{number}"
        if len(line) >= limit and not line.endswith(b"\n"):
            size = len(line) + reader.skip_line()
            yield _reject(source, record, REASON_TOO_LARGE, float(size), format="text")
            continue
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            yield _reject(source, record, REASON_BAD_JSON, None, line, format="text")
            continue
        key = obj.get(cfg.id_field) if cfg.id_field else None
        if key is not None:
            record = _clean(f"id:{key}")
        url = obj.get(cfg.url_field) if cfg.url_field else None
        yield _field_row(source, record, line, obj.get(cfg.text_field), url, cfg)


def _read_parquet(
    path: str, source: str, filesystem: pafs.FileSystem, cfg: ReaderConfig
) -> Iterator[dict[str, Any]]:
    with filesystem.open_input_file(path) as handle:
        if handle.size() == 0:
            yield _reject(source, "file", REASON_EMPTY, format="text")
            return
        parquet = pq.ParquetFile(handle)
        total = parquet.metadata.num_rows
        names = set(parquet.schema_arrow.names)
        if total == 0:
            yield _reject(source, "file", REASON_EMPTY, format="text")
            return
        if cfg.text_field not in names:  # every row lacks it: still one row per document
            for number in range(total):
                yield _reject(source, f"row:{number}", REASON_MISSING_FIELD, format="text")
            return
        wanted = dict.fromkeys(c for c in (cfg.text_field, cfg.id_field, cfg.url_field) if c)
        columns = [c for c in wanted if c in names]
        number = 0
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
            values = {c: batch.column(c).to_pylist() for c in columns}
            empty = [None] * batch.num_rows
            keys = values.get(cfg.id_field or "", empty)
            urls = values.get(cfg.url_field or "", empty)
            for text, key, url in zip(values[cfg.text_field], keys, urls, strict=True):
                record = f"row:{number}" if key is None else _clean(f"id:{key}")
                raw = text.encode("utf-8") if isinstance(text, str) else b""
                yield _field_row(source, record, raw, text, url, cfg)
                number += 1


def _read_warc(reader: _Reader, source: str, cfg: ReaderConfig) -> Iterator[dict[str, Any]]:
    """Documents are ``response`` records holding an HTTP 200 HTML page; every other
    record is skipped silently. A broken record costs one row and a resync; a broken
    stream (corrupt or truncated gzip) costs one row for the rest of the file."""
    if not reader.peek(1):
        yield _reject(source, "file", REASON_EMPTY, format="html")
        return
    record: str | None = None
    try:
        while True:
            record, reader.keep_from = None, None
            start = reader.tell()
            line = reader.readline(_LINE_MAX_BYTES)
            if not line:
                return
            if not line.strip():
                continue
            record = f"offset:{reader.locate(start)}"
            reader.keep_from = start
            parsed = _warc_headers(reader, line)
            if parsed is None:
                yield _reject(source, record, REASON_MALFORMED_WARC, format="html")
                _resync(reader)
                continue
            yield from _warc_record(reader, parsed[0], parsed[1], source, record, cfg)
    except _ReadError as err:
        where = record or f"offset:{err.offset if err.offset is not None else reader.tell()}"
        yield _reject(source, where, err.reason, err.score, format="html")


def _warc_headers(reader: _Reader, first_line: bytes) -> tuple[dict[str, str], int] | None:
    """Header fields (lower-case names) and Content-Length, or None if malformed."""
    if not _WARC_LINE.match(first_line):
        return None
    headers: dict[str, str] = {}
    name = ""
    for _ in range(_WARC_HEADER_MAX_LINES):
        line = reader.readline(_LINE_MAX_BYTES)
        if not line:
            raise _ReadError(REASON_TRUNCATED)
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
    reader: _Reader, headers: dict[str, str], length: int, source: str, record: str,
    cfg: ReaderConfig,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    block_type = headers.get("content-type", "application/http").lower()
    is_response = headers.get("warc-type", "").lower() == "response" and block_type.startswith(
        "application/http"
    )
    url = headers.get("warc-target-uri", "").strip().strip("<>") or None
    fields = {"format": "html", "url": url and _clean(url), "date": _iso_date(headers)}
    block_start = reader.tell()
    if length > cfg.max_doc_bytes + _HTTP_HEAD_MAX_BYTES:  # stream past it, never hold it
        is_page = is_response and _http_page(reader.peek(_HTTP_HEAD_MAX_BYTES)) is not None
        if reader.skip(length) < length:
            raise _ReadError(REASON_TRUNCATED)
        if not _at_boundary(reader):
            yield _reject(source, record, REASON_MALFORMED_WARC, **fields)
            _resync(reader)
        elif is_page:
            yield _reject(source, record, REASON_TOO_LARGE, float(length), **fields)
        return
    block = reader.peek(length)
    if len(block) < length:
        if not _WARC_LINE.search(block):
            raise _ReadError(REASON_TRUNCATED)
        yield _reject(source, record, REASON_MALFORMED_WARC, **fields)
        _resync(reader)
        return
    reader.skip(length)
    if not _at_boundary(reader):  # wrong Content-Length: rescan this block for a record
        yield _reject(source, record, REASON_MALFORMED_WARC, **fields)
        reader.seek(block_start)
        _resync(reader)
        return
    if not is_response:
        return
    page = _http_page(block)
    if page is None:
        yield _reject(source, record, REASON_MALFORMED_HTTP, **fields)
    else:
        status, http, body_start = page
        if status == 200 and _is_html(http.get("content-type"), block[body_start:]):
            payload = _http_payload(block[body_start:], http, cfg)
            declared = _charsets(http.get("content-type"), payload)
            yield _document(source, record, payload, cfg, declared=declared, **fields)


def _at_boundary(reader: _Reader) -> bool:
    """After a record block: blank lines, then the next ``WARC/`` line or the end."""
    while True:
        try:
            head = reader.peek(8)
        except _ReadError:
            return True  # the record itself is whole; the next one reports the damage
        if not head or _WARC_LINE.match(head):
            return True
        if reader.readline(_LINE_MAX_BYTES).strip():
            return False


def _resync(reader: _Reader) -> None:
    """Skip to the next line that starts a WARC record."""
    reader.keep_from = None
    at_line_start = True
    while True:
        start = reader.tell()
        line = reader.readline(_LINE_MAX_BYTES)
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


def _http_payload(body: bytes, http: dict[str, str], cfg: ReaderConfig) -> bytes:
    """Undo transfer and content codings a crawler stored as sent (wget keeps chunked
    bodies); Common Crawl renames the headers of codings it already removed."""
    if "chunked" in http.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    coding = http.get("content-encoding", "").strip().lower()
    if coding in ("gzip", "x-gzip", "deflate") and body[:2] in (b"\x1f\x8b", b"\x78\x9c"):
        inflater = zlib.decompressobj(47)  # gzip or zlib header
        try:
            return inflater.decompress(body, cfg.max_doc_bytes + 1)
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
