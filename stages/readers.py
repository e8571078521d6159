"""Input files -> document rows (``DOCUMENT_SCHEMA``): WARC (and WET), HTML, JSONL (and
``.json``: JSON Lines or one array), Parquet and plain text or source files; gzip
(``.gz``) or zstd (``.zst``) compressed.

Bad input never raises: a broken file or record becomes a row whose ``drop_reason``
names the problem (``drop_stage = "read"``), so the ledger counts it. Memory stays
bounded by ``max_doc_bytes``: a record larger than the cap is skipped, never held.

Bytes are read by ``stages.byte_streams`` (chunked plain/gzip sources, the buffered
reader, charset decoding) and WARC records parsed by ``stages.warc``; this module holds
the config, the entry points, the row building and the JSONL/Parquet/single-file formats.
Every ``REASON_*`` a read row can carry is importable from here.

A big file may be read in pieces (``Part``, cut by ``pipeline.shards.plan_shards``):
byte ranges of plain JSON Lines and WARC files and of multi-member WARC gzip files,
row-group ranges of Parquet files. Every record is read by exactly one piece, the one
in which it starts, and is named by where it is in the whole file, so the rows (ids,
records, texts, rejects) of a file are the same whatever its pieces:

- JSON Lines records are named ``line:N``, the line's number in the whole file. A
  piece of a plain JSONL file carries the number of lines that start before it
  (``Part.first_row``), counted by the planner in one sequential pass over the file
  (``count_line_starts``, at memchr speed: 0.16 s for 149 MB from the page cache; on an
  object store that pass is a download of the file). WARC records are named by their
  byte offset (``offset:N``), which a piece knows by itself.
- Parquet rows stay ``row:N`` (the row number in the file): the footer gives each row
  group's row count, so a piece knows its first row without reading the rows before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
from stages.byte_streams import (
    LINE_MAX_BYTES,
    REASON_BINARY,
    REASON_CORRUPT_GZIP,
    REASON_CORRUPT_ZSTD,
    REASON_INVALID_ENCODING,
    REASON_TOO_LARGE,
    REASON_TRUNCATED,
    ByteReader,
    GzipSource,
    PlainSource,
    ReadError,
    TrackedFile,
    ZstdSource,
    declared_charsets,
    decode_bytes,
    span_digest,
)
from stages.warc import REASON_MALFORMED_HTTP, REASON_MALFORMED_WARC, read_warc, start_at_record

__all__ = [
    "BYTES",
    "CODE_LANGUAGES",
    "REASON_BAD_JSON",
    "REASON_BINARY",
    "REASON_CORRUPT_GZIP",
    "REASON_CORRUPT_ZSTD",
    "REASON_EMPTY",
    "REASON_INVALID_ENCODING",
    "REASON_MALFORMED_HTTP",
    "REASON_MALFORMED_WARC",
    "REASON_MISSING_FIELD",
    "REASON_TOO_LARGE",
    "REASON_TRUNCATED",
    "REASON_UNSUPPORTED",
    "ROW_GROUPS",
    "STAGE_NAME",
    "TEXT_SUFFIXES",
    "Part",
    "ReadInput",
    "ReaderConfig",
    "count_line_starts",
    "decode_bytes",
    "document_id",
    "parquet_row_group_spans",
    "read_file",
    "read_pieces",
    "read_shard",
    "reader_kind",
]

STAGE_NAME = "read"
REASON_EMPTY = "empty_document"
REASON_BAD_JSON = "malformed_json"
REASON_MISSING_FIELD = "missing_text_field"
REASON_UNSUPPORTED = "unsupported_format"
# The other reasons come from the module whose rule fires them: REASON_CORRUPT_GZIP,
# REASON_CORRUPT_ZSTD, REASON_TRUNCATED, REASON_TOO_LARGE, REASON_BINARY and
# REASON_INVALID_ENCODING from stages.byte_streams; REASON_MALFORMED_WARC and
# REASON_MALFORMED_HTTP from stages.warc.

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
    # WET (Common Crawl's extracted text): WARC conversion records, read by the WARC parser
    ".warc.wet.gz": "warc", ".wet.gz": "warc", ".warc.wet": "warc", ".wet": "warc",
    ".warc.zst": "warc", ".warc.wet.zst": "warc", ".jsonl.zst": "jsonl",
    ".json.zst": "jsonl", ".html.zst": "html",
    ".json": "jsonl",  # JSON Lines (what most .json dumps hold), or one array of records
}  # fmt: skip
_JSON_ARRAY_DOCS = 10  # a .json array is read whole: at most this many max_doc_bytes

_PARQUET_BATCH_ROWS = 256
_ROW_FIELDS = tuple(n for n in DOCUMENT_SCHEMA.names if n not in ("shard", "ordinal"))


BYTES = "bytes"
ROW_GROUPS = "row_groups"


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a file, read on its own: bytes ``start``..``stop`` (``BYTES``: a
    line, WARC record or gzip member belongs to the piece in which it starts) or row
    groups ``start``..``stop`` (``ROW_GROUPS``). ``first_row`` counts what comes before
    the piece, so records keep their number in the file: the rows of the groups before
    (Parquet), the lines that start before ``start`` (JSON Lines)."""

    unit: str
    start: int
    stop: int
    first_row: int = 0

    def describe(self) -> list[Any]:
        """``[unit, start, stop]``: how a done marker records the piece."""
        return [self.unit, self.start, self.stop]


@dataclass(frozen=True, slots=True)
class ReadInput:
    """The bytes a file's (or piece's) rows came from, for its done marker: ``spans``
    (``[lo, hi]`` byte ranges) and the sha256 of their bytes in order. A whole file's
    span is the whole file, so its digest is the file's sha256."""

    spans: tuple[tuple[int, int], ...]
    sha256: str


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
    paths: Sequence[tuple[str, str] | tuple[str, str, Part | None]],
    shard: int,
    filesystem: pafs.FileSystem,
    cfg: ReaderConfig,
) -> pa.Table:
    """All documents (kept and rejected) of the ``(path, source)`` files (or ``(path,
    source, part)`` pieces), in order."""
    return read_pieces(paths, shard, filesystem, cfg)[0]


def read_pieces(
    paths: Sequence[tuple[str, str] | tuple[str, str, Part | None]],
    shard: int,
    filesystem: pafs.FileSystem,
    cfg: ReaderConfig,
    with_inputs: bool = False,
) -> tuple[pa.Table, list[ReadInput | None]]:
    """``read_shard``, and with ``with_inputs`` the ``ReadInput`` of each item (None
    where the file could not be opened), hashed as the bytes are read."""
    rows: list[dict[str, Any]] = []
    inputs: list[ReadInput | None] = []
    for item in paths:
        part = item[2] if len(item) > 2 else None  # type: ignore[misc]
        found = inputs if with_inputs else None
        rows.extend(read_file(item[0], item[1], filesystem, cfg, part, found))
    columns: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in _ROW_FIELDS}
    columns["shard"] = [shard] * len(rows)
    columns["ordinal"] = list(range(len(rows)))
    table = pa.table({name: columns[name] for name in DOCUMENT_SCHEMA.names}, DOCUMENT_SCHEMA)
    return table, inputs


def read_file(
    path: str,
    source: str,
    filesystem: pafs.FileSystem,
    cfg: ReaderConfig,
    part: Part | None = None,
    inputs: list[ReadInput | None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows for one file (or one ``part`` of it); an unexpected exception ends the
    file with one ``error:`` row after the documents already yielded. With ``inputs``,
    the ``ReadInput`` of what was read is appended to it once the rows are done."""
    kind = reader_kind(path)
    opened: list[TrackedFile] = []
    try:
        if kind is None:
            yield _reject(source, "file", REASON_UNSUPPORTED)
        elif kind == "parquet":
            yield from _read_parquet(path, source, filesystem, cfg, part)
        else:
            with filesystem.open_input_file(path) as raw:
                yield from _read_stream(raw, path, source, kind, cfg, part, opened)
    except ReadError as err:
        record = "file" if err.offset is None else f"offset:{err.offset}"
        yield _reject(source, record, err.reason, err.score)
    except Exception as exc:  # one unreadable file must not end the shard
        yield _reject(source, "file", f"{ERROR_PREFIX}{type(exc).__name__}")
    if inputs is not None:
        inputs.append(_read_input(path, filesystem, part, opened[0] if opened else None))


def _read_stream(
    raw: pa.NativeFile,
    path: str,
    source: str,
    kind: str,
    cfg: ReaderConfig,
    part: Part | None,
    opened: list[TrackedFile],
) -> Iterator[dict[str, Any]]:
    """The byte-stream formats; a plain piece is opened one byte before its start (is
    the start a line start?), a gzip piece at its start (the first member there)."""
    lower = path.lower()
    compressed = lower.endswith((".gz", ".zst"))
    origin = 0 if part is None else max(part.start - (0 if compressed else 1), 0)
    tracked = TrackedFile(raw, origin)
    opened.append(tracked)
    chunks: GzipSource | ZstdSource | PlainSource
    if lower.endswith(".gz"):
        stop = None if part is None else part.stop
        chunks = GzipSource(
            tracked, cfg.max_doc_bytes, cfg.max_decompressed_ratio,
            members=kind == "warc", origin=origin, stop=stop,
        )  # fmt: skip
    elif lower.endswith(".zst"):
        chunks = ZstdSource(tracked, cfg.max_doc_bytes, cfg.max_decompressed_ratio)
    else:
        chunks = PlainSource(tracked, origin, None if part is None else part.stop)
    reader = ByteReader(chunks, 0 if compressed else origin)
    line_stop = None if part is None or compressed else part.stop
    if part is not None and not compressed and part.start > 0:
        if kind == "warc":
            start_at_record(reader, part.start)
        else:
            _start_at_line(reader)
    if kind == "warc":
        yield from _read_warc(reader, source, cfg, whole=part is None, stop=line_stop)
    elif kind == "jsonl":
        arrays = part is None and lower.removesuffix(".gz").removesuffix(".zst").endswith(".json")
        first_line = 1 if part is None else part.first_row + 1
        yield from _read_jsonl(
            reader, source, cfg, arrays, whole=part is None, stop=line_stop, first_line=first_line
        )
    else:
        yield _read_single(reader, source, kind, CODE_LANGUAGES.get(_suffix(path)), cfg)


def _start_at_line(reader: ByteReader) -> None:
    """A reader opened one byte before a piece's start: move to the first line that
    starts at or after it (a line starting before it is the previous piece's)."""
    if reader.peek(1) == b"\n":
        reader.skip(1)
    else:
        reader.skip_line()


def _read_input(
    path: str, filesystem: pafs.FileSystem, part: Part | None, tracked: TrackedFile | None
) -> ReadInput | None:
    """What the rows of ``path`` (or ``part``) came from: the whole file for a whole
    file, the bytes read for a byte-range piece, the row groups and the footer for a
    row-group piece. Hashing goes on from where reading stopped when it could hash as it
    read; otherwise those bytes are read again. None when the file cannot be opened."""
    try:
        with filesystem.open_input_file(path) as raw:
            size = raw.size()
            if part is None:
                if tracked is not None and tracked.hasher is not None and tracked.lo == 0:
                    tracked.drain(raw)
                    return ReadInput(((0, size),), tracked.hasher.hexdigest())
                return ReadInput(((0, size),), span_digest(raw, [(0, size)]))
            if part.unit == ROW_GROUPS:
                spans = parquet_row_group_spans(raw, part.start, part.stop)
                return ReadInput(spans, span_digest(raw, spans))
            if tracked is None:
                return None
            spans = ((tracked.lo, tracked.hi),)
            return ReadInput(spans, tracked.digest() or span_digest(raw, spans))
    except OSError:
        return None


def parquet_row_group_spans(
    raw: pa.NativeFile, start: int, stop: int
) -> tuple[tuple[int, int], ...]:
    """The bytes row groups ``start``..``stop`` of a Parquet file are decoded from:
    their column chunks (one span, first chunk to last) and the footer, which says how
    to decode them. Read from the footer only."""
    metadata = pq.ParquetFile(raw).metadata
    lo, hi = raw.size(), 0
    for index in range(start, stop):
        group = metadata.row_group(index)
        for column in range(group.num_columns):
            chunk = group.column(column)
            first = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                first = min(first, chunk.dictionary_page_offset)
            lo, hi = min(lo, first), max(hi, first + chunk.total_compressed_size)
    size = raw.size()
    raw.seek(size - 8)
    footer_bytes = int.from_bytes(raw.read(4), "little")
    return ((lo, hi), (size - 8 - footer_bytes, size))


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


# --- formats -----------------------------------------------------------------------------


def _read_single(
    reader: ByteReader, source: str, kind: str, code_language: str | None, cfg: ReaderConfig
) -> dict[str, Any]:
    """One document per file (HTML, text, code): read one byte past the cap and no more."""
    data = reader.peek(cfg.max_doc_bytes + 1)
    if len(data) > cfg.max_doc_bytes:
        return _reject(source, "file", REASON_TOO_LARGE, format=kind, code_language=code_language)
    declared = declared_charsets(None, data) if kind == "html" else ()
    return _document(
        source, "file", data, cfg, declared=declared, format=kind, code_language=code_language
    )


LINE_COUNT_CHUNK_BYTES = 8 * 1024**2


def count_line_starts(stream: Any, starts: Sequence[int]) -> list[int]:
    """For each byte position in ``starts`` (ascending), how many lines start before it:
    the line at 0 and one after each newline. One sequential read of ``stream`` (a
    binary file object), up to the last position."""
    counts: list[int] = []
    seen = newlines = 0  # bytes read, newlines among them
    for target in sorted(starts):
        # lines that start before ``target``: the one at 0, one after each newline in
        # bytes [0, target - 1)
        while seen < target - 1:
            chunk = stream.read(min(LINE_COUNT_CHUNK_BYTES, target - 1 - seen))
            if not chunk:
                raise ValueError(f"file ends at byte {seen}, before position {target}")
            seen += len(chunk)
            newlines += chunk.count(b"\n")
        counts.append(0 if target == 0 else 1 + newlines)
    return counts


def _read_jsonl(
    reader: ByteReader,
    source: str,
    cfg: ReaderConfig,
    arrays: bool = False,
    whole: bool = True,
    stop: int | None = None,
    first_line: int = 1,
) -> Iterator[dict[str, Any]]:
    """JSON Lines, each record named by its line number in the file (``first_line``: the
    number of the piece's first line); with ``arrays`` (a whole ``.json`` file) also one
    JSON array of records. ``stop``: a piece reads the lines that start before it."""
    if whole and not reader.peek(1):
        yield _reject(source, "file", REASON_EMPTY, format="text")
        return
    if arrays and reader.peek(LINE_MAX_BYTES).lstrip()[:1] == b"[":
        yield from _read_json_array(reader, source, cfg)
        return
    limit = 2 * cfg.max_doc_bytes + LINE_MAX_BYTES  # JSON escapes can double the text
    number = first_line - 1
    while stop is None or reader.tell() < stop:
        number += 1
        record = f"line:{number}"
        line = reader.readline(limit)
        if not line:
            return
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
        yield _object_row(source, record, line, obj, cfg)


def _object_row(
    source: str, record: str, raw: bytes, obj: Any, cfg: ReaderConfig
) -> dict[str, Any]:
    """One JSON record: a document from its text field, or a bad_json reject when it
    is not an object. An id field, when configured and present, names the record."""
    if not isinstance(obj, dict):
        return _reject(source, record, REASON_BAD_JSON, None, raw, format="text")
    key = obj.get(cfg.id_field) if cfg.id_field else None
    if key is not None:
        record = _clean(f"id:{key}")
    url = obj.get(cfg.url_field) if cfg.url_field else None
    return _field_row(source, record, raw, obj.get(cfg.text_field), url, cfg)


def _read_json_array(
    reader: ByteReader, source: str, cfg: ReaderConfig
) -> Iterator[dict[str, Any]]:
    """``[{...}, {...}]``: one row per element (``item:N``). The array is parsed whole,
    so a file over ``_JSON_ARRAY_DOCS * max_doc_bytes`` is one too_large row (convert
    it to JSON Lines to stream it)."""
    cap = _JSON_ARRAY_DOCS * cfg.max_doc_bytes
    data = reader.peek(cap + 1)
    if len(data) > cap:
        yield _reject(source, "file", REASON_TOO_LARGE, float(len(data)), format="text")
        return
    try:
        items = json.loads(data)
    except (ValueError, RecursionError):
        yield _reject(source, "file", REASON_BAD_JSON, None, data[:LINE_MAX_BYTES], format="text")
        return
    for number, obj in enumerate(items):
        raw = json.dumps(obj, ensure_ascii=False, sort_keys=True).encode("utf-8", "replace")
        yield _object_row(source, f"item:{number}", raw, obj, cfg)


def _read_parquet(
    path: str, source: str, filesystem: pafs.FileSystem, cfg: ReaderConfig, part: Part | None
) -> Iterator[dict[str, Any]]:
    """Rows ``row:N`` (N: the row in the file); a ``part`` reads its row groups only."""
    with filesystem.open_input_file(path) as handle:
        if part is None and handle.size() == 0:
            yield _reject(source, "file", REASON_EMPTY, format="text")
            return
        parquet = pq.ParquetFile(handle)
        names = set(parquet.schema_arrow.names)
        groups = range(parquet.num_row_groups) if part is None else range(part.start, part.stop)
        number = 0 if part is None else part.first_row
        total = sum(parquet.metadata.row_group(group).num_rows for group in groups)
        if part is None and total == 0:
            yield _reject(source, "file", REASON_EMPTY, format="text")
            return
        if cfg.text_field not in names:  # every row lacks it: still one row per document
            for row in range(number, number + total):
                yield _reject(source, f"row:{row}", REASON_MISSING_FIELD, format="text")
            return
        wanted = dict.fromkeys(c for c in (cfg.text_field, cfg.id_field, cfg.url_field) if c)
        columns = [c for c in wanted if c in names]
        batches = parquet.iter_batches(
            batch_size=_PARQUET_BATCH_ROWS, row_groups=list(groups), columns=columns
        )
        for batch in batches:
            values = {c: batch.column(c).to_pylist() for c in columns}
            empty = [None] * batch.num_rows
            keys = values.get(cfg.id_field or "", empty)
            urls = values.get(cfg.url_field or "", empty)
            for text, key, url in zip(values[cfg.text_field], keys, urls, strict=True):
                record = f"row:{number}" if key is None else _clean(f"id:{key}")
                raw = text.encode("utf-8") if isinstance(text, str) else b""
                yield _field_row(source, record, raw, text, url, cfg)
                number += 1


def _read_warc(
    reader: ByteReader, source: str, cfg: ReaderConfig, whole: bool = True, stop: int | None = None
) -> Iterator[dict[str, Any]]:
    """One row per page, text (WET conversion) or rejected record that
    ``stages.warc.read_warc`` reports."""
    if whole:
        try:
            empty = not reader.peek(1)
        except ReadError:
            empty = False  # a broken first member: read_warc reports it and reads on
        if empty:
            yield _reject(source, "file", REASON_EMPTY, format="html")
            return
    for warc in read_warc(reader, cfg.max_doc_bytes, stop):
        fields = {"format": warc.media, "url": warc.url and _clean(warc.url), "date": warc.date}
        if warc.reason is not None:
            yield _reject(source, warc.record, warc.reason, warc.score, **fields)
        else:
            payload, declared = warc.payload, warc.declared
            yield _document(source, warc.record, payload, cfg, declared=declared, **fields)
