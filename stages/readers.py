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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
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
    ZstdSource,
    declared_charsets,
    decode_bytes,
)
from stages.warc import REASON_MALFORMED_HTTP, REASON_MALFORMED_WARC, read_warc

__all__ = [
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
    "STAGE_NAME",
    "TEXT_SUFFIXES",
    "ReaderConfig",
    "decode_bytes",
    "document_id",
    "read_file",
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
                chunks: GzipSource | ZstdSource | PlainSource
                if path.lower().endswith(".gz"):
                    chunks = GzipSource(raw, cfg.max_doc_bytes, cfg.max_decompressed_ratio)
                elif path.lower().endswith(".zst"):
                    chunks = ZstdSource(raw, cfg.max_doc_bytes, cfg.max_decompressed_ratio)
                else:
                    chunks = PlainSource(raw)
                reader = ByteReader(chunks)
                if kind == "warc":
                    yield from _read_warc(reader, source, cfg)
                elif kind == "jsonl":
                    arrays = path.lower().removesuffix(".gz").removesuffix(".zst").endswith(".json")
                    yield from _read_jsonl(reader, source, cfg, arrays=arrays)
                else:
                    yield _read_single(reader, source, kind, CODE_LANGUAGES.get(_suffix(path)), cfg)
    except ReadError as err:
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


def _read_jsonl(
    reader: ByteReader, source: str, cfg: ReaderConfig, arrays: bool = False
) -> Iterator[dict[str, Any]]:
    """JSON Lines; with ``arrays`` (a ``.json`` file) also one JSON array of records."""
    if not reader.peek(1):
        yield _reject(source, "file", REASON_EMPTY, format="text")
        return
    if arrays and reader.peek(LINE_MAX_BYTES).lstrip()[:1] == b"[":
        yield from _read_json_array(reader, source, cfg)
        return
    limit = 2 * cfg.max_doc_bytes + LINE_MAX_BYTES  # JSON escapes can double the text
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


def _read_warc(reader: ByteReader, source: str, cfg: ReaderConfig) -> Iterator[dict[str, Any]]:
    """One row per page, text (WET conversion) or rejected record that
    ``stages.warc.read_warc`` reports."""
    if not reader.peek(1):
        yield _reject(source, "file", REASON_EMPTY, format="html")
        return
    for warc in read_warc(reader, cfg.max_doc_bytes):
        fields = {"format": warc.media, "url": warc.url and _clean(warc.url), "date": warc.date}
        if warc.reason is not None:
            yield _reject(source, warc.record, warc.reason, warc.score, **fields)
        else:
            payload, declared = warc.payload, warc.declared
            yield _document(source, warc.record, payload, cfg, declared=declared, **fields)
