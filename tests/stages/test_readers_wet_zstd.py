"""WET files (WARC ``conversion`` records: extracted text) and zstd-compressed inputs
(``.jsonl.zst``, ``.warc.zst``), with the same accounting as the other readers: every
bad record is a row with a reason."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from stages.base import DROP_REASON, DROP_STAGE
from stages.readers import (
    REASON_BAD_JSON,
    REASON_CORRUPT_ZSTD,
    REASON_EMPTY,
    REASON_MALFORMED_WARC,
    REASON_TOO_LARGE,
    REASON_TRUNCATED,
    ReaderConfig,
    read_file,
    read_shard,
    reader_kind,
)
from tests.stages.test_readers import _good_record, _warc

FS = pafs.LocalFileSystem()
TEXTS = ["Première page: du texte extrait.\nDeuxième ligne.", "Second page text.", ""]


def _read(path: Path, cfg: ReaderConfig | None = None) -> list[dict]:
    return list(read_file(str(path), path.name, FS, cfg or ReaderConfig()))


def _zst(data: bytes) -> bytes:
    return pa.compress(data, codec="zstd", asbytes=True)


def _conversion(number: int, text: str) -> bytes:
    record = _warc(b"conversion", text.encode(), b"https://wet.example/%d" % number)
    return record.replace(b"WARC-Record-ID", b"Content-Type: text/plain\r\nWARC-Record-ID")


def _wet_records() -> list[bytes]:
    info = _warc(b"warcinfo", b"software: test\r\nformat: WARC File Format 1.0\r\n")
    broken = _warc(b"conversion", b"cut short", b"https://wet.example/x", length=10_000)
    records = [info] + [_conversion(i, t) for i, t in enumerate(TEXTS)]
    return [*records[:2], broken, *records[2:]]


def _write_wet_gz(path: Path) -> list[int]:
    offsets, data = [], b""
    for record in _wet_records():
        offsets.append(len(data))
        data += gzip.compress(record, mtime=0)
    path.write_bytes(data)
    return offsets


def test_reader_kinds_for_wet_and_zstd() -> None:
    for name in ("a.warc.wet.gz", "a.wet.gz", "a.warc.wet", "a.WARC.ZST", "a.warc.wet.zst"):
        assert reader_kind(name) == "warc", name
    assert reader_kind("a.jsonl.zst") == reader_kind("a.json.zst") == "jsonl"
    assert reader_kind("a.html.zst") == "html"


def test_wet_conversion_records_are_text_documents(tmp_path: Path) -> None:
    offsets = _write_wet_gz(tmp_path / "CC-MAIN-1.warc.wet.gz")
    rows = _read(tmp_path / "CC-MAIN-1.warc.wet.gz")
    # warcinfo skipped; the record with a wrong length is rejected and reading resyncs
    assert [(r["record"], r[DROP_REASON]) for r in rows] == [
        (f"offset:{offsets[1]}", None),
        (f"offset:{offsets[2]}", REASON_MALFORMED_WARC),
        (f"offset:{offsets[3]}", None),
        (f"offset:{offsets[4]}", REASON_EMPTY),
    ]
    kept = [r for r in rows if r[DROP_REASON] is None]
    assert [r["text"] for r in kept] == TEXTS[:2]
    assert all(r["format"] == "text" and r["html"] is None for r in kept)
    assert [r["url"] for r in kept] == ["https://wet.example/0", "https://wet.example/1"]
    assert all(r["date"] == "2024-05-18T01:58:10Z" for r in kept)
    assert all(r[DROP_STAGE] == "read" for r in rows if r[DROP_REASON])
    # a WET file named like a WARC file gives the same documents (not zero rows)
    (tmp_path / "renamed.warc.gz").write_bytes((tmp_path / "CC-MAIN-1.warc.wet.gz").read_bytes())
    renamed = _read(tmp_path / "renamed.warc.gz")
    assert [(r["record"], r["text"], r[DROP_REASON]) for r in renamed] == [
        (r["record"], r["text"], r[DROP_REASON]) for r in rows
    ]


def test_zstd_jsonl_reads_like_plain_jsonl(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"document {i}", "url": f"u{i}"}) for i in range(5)]
    data = ("\n".join([*lines[:2], "{broken", *lines[2:]]) + "\n").encode()
    (tmp_path / "docs.jsonl").write_bytes(data)
    half = len(data) // 2  # two zstd frames back to back, as `zstd` writes appended files
    (tmp_path / "docs.jsonl.zst").write_bytes(_zst(data[:half]) + _zst(data[half:]))
    plain, packed = _read(tmp_path / "docs.jsonl"), _read(tmp_path / "docs.jsonl.zst")
    keys = ("record", "text", "url", DROP_REASON)
    assert [tuple(r[k] for k in keys) for r in packed] == [tuple(r[k] for k in keys) for r in plain]
    assert [r[DROP_REASON] for r in packed].count(REASON_BAD_JSON) == 1
    assert len(packed) == 6


def test_zstd_warc_and_wet(tmp_path: Path) -> None:
    warc = b"".join(_good_record(i) for i in range(3))
    (tmp_path / "a.warc.zst").write_bytes(_zst(warc))
    pages = _read(tmp_path / "a.warc.zst")
    assert [r[DROP_REASON] for r in pages] == [None] * 3
    assert all(r["format"] == "html" and "Hello page" in r["html"] for r in pages)
    (tmp_path / "b.warc.wet.zst").write_bytes(_zst(b"".join(_wet_records())))
    texts = [r["text"] for r in _read(tmp_path / "b.warc.wet.zst") if r[DROP_REASON] is None]
    assert texts == TEXTS[:2]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[: len(data) - 7], REASON_TRUNCATED),
        (lambda data: data[:12] + b"\xff" * 40 + data[52:], REASON_CORRUPT_ZSTD),
        (lambda data: b"this is not zstd at all" * 4, REASON_CORRUPT_ZSTD),
    ],
)
def test_broken_zstd_keeps_what_came_before_and_says_why(tmp_path: Path, damage, reason) -> None:
    lines = [json.dumps({"text": f"document number {i} " * 20}) for i in range(400)]
    data = _zst(("\n".join(lines) + "\n").encode())
    (tmp_path / "bad.jsonl.zst").write_bytes(damage(data))
    rows = _read(tmp_path / "bad.jsonl.zst")
    assert rows[-1][DROP_REASON] == reason and rows[-1][DROP_STAGE] == "read"
    assert all(r[DROP_REASON] is None for r in rows[:-1])
    assert [r["text"] for r in rows[:-1]] == [json.loads(x)["text"] for x in lines[: len(rows) - 1]]


def test_zstd_bomb_is_one_too_large_row(tmp_path: Path) -> None:
    (tmp_path / "bomb.jsonl.zst").write_bytes(_zst(b" " * (64 << 20)))
    rows = _read(tmp_path / "bomb.jsonl.zst", ReaderConfig(max_doc_bytes=10_000))
    assert [r[DROP_REASON] for r in rows] == [REASON_TOO_LARGE]


def test_shard_accounting_over_the_new_formats(tmp_path: Path) -> None:
    _write_wet_gz(tmp_path / "a.warc.wet.gz")
    lines = [json.dumps({"text": "zstd text"}), "not json", json.dumps({"text": " "})]
    (tmp_path / "b.jsonl.zst").write_bytes(_zst("\n".join(lines).encode()))
    paths = [(str(tmp_path / n), n) for n in ("a.warc.wet.gz", "b.jsonl.zst")]
    table = read_shard(paths, 0, FS, ReaderConfig())
    reasons = table.column(DROP_REASON).to_pylist()
    assert table.num_rows == 7 and reasons.count(None) == 3
    assert sorted(r for r in reasons if r) == sorted(
        [REASON_MALFORMED_WARC, REASON_EMPTY, REASON_BAD_JSON, REASON_EMPTY]
    )


def test_plain_json_files_as_lines_or_one_array(tmp_path: Path) -> None:
    assert reader_kind("dump.json") == "jsonl"
    records = [{"text": "first doc", "url": "u0"}, {"text": "second doc"}, 7, {"body": "x"}]
    (tmp_path / "array.json").write_text(json.dumps(records, indent=1))
    rows = _read(tmp_path / "array.json")
    assert [(r["record"], r["text"], r[DROP_REASON]) for r in rows] == [
        ("item:0", "first doc", None),
        ("item:1", "second doc", None),
        ("item:2", None, REASON_BAD_JSON),
        ("item:3", None, "missing_text_field"),
    ]
    assert rows[0]["url"] == "u0"
    lines = "\n".join(json.dumps(r) for r in records[:2]) + "\n"
    (tmp_path / "lines.json").write_text(lines)
    assert [r["text"] for r in _read(tmp_path / "lines.json")] == ["first doc", "second doc"]
    (tmp_path / "broken.json").write_text('[{"text": "a"}, ')
    assert [r[DROP_REASON] for r in _read(tmp_path / "broken.json")] == [REASON_BAD_JSON]
    (tmp_path / "big.json").write_text(json.dumps([{"text": "y" * 500}] * 30))
    big = _read(tmp_path / "big.json", ReaderConfig(max_doc_bytes=1000))
    assert [r[DROP_REASON] for r in big] == [REASON_TOO_LARGE]  # over 10x max_doc_bytes
    (tmp_path / "array.json.zst").write_bytes(_zst((tmp_path / "array.json").read_bytes()))
    assert [r["text"] for r in _read(tmp_path / "array.json.zst")][:2] == [
        "first doc",
        "second doc",
    ]
    # a .jsonl file is read line by line even when a line is an array
    (tmp_path / "odd.jsonl").write_text('[1, 2]\n{"text": "kept"}\n')
    assert [r[DROP_REASON] for r in _read(tmp_path / "odd.jsonl")] == [REASON_BAD_JSON, None]
