"""A file read as one piece or as several gives the same rows (issue 18): ids, records,
texts and rejects, concatenated in the same order, nothing lost or doubled, wherever
the cuts fall (on a line or record start, one byte either side, inside a record, on
the last byte), and a bad record inside a split file is rejected exactly once."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from stages.readers import (
    BYTES,
    REASON_BAD_JSON,
    REASON_CORRUPT_GZIP,
    REASON_MALFORMED_WARC,
    REASON_MISSING_FIELD,
    REASON_TOO_LARGE,
    REASON_TRUNCATED,
    ROW_GROUPS,
    Part,
    ReaderConfig,
    count_line_starts,
    read_file,
    read_pieces,
)

FS = pafs.LocalFileSystem()
CFG = ReaderConfig(max_doc_bytes=2_000)  # a line past 2*2000 + 64 KiB is too_large
DROP = "drop_reason"


def _rows(path: Path, parts: list[Part] | None = None) -> list[dict]:
    if parts is None:
        return list(read_file(str(path), path.name, FS, CFG))
    if path.suffix in (".jsonl", ".json"):  # the planner numbers a JSONL piece's lines
        with path.open("rb") as stream:
            before = count_line_starts(stream, [part.start for part in parts])
        parts = [replace(part, first_row=n) for part, n in zip(parts, before, strict=True)]
    return [row for part in parts for row in read_file(str(path), path.name, FS, CFG, part)]


def _byte_parts(cuts: list[int], size: int) -> list[Part]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < size)), size]
    return [Part(BYTES, start, stop) for start, stop in pairwise(bounds)]


def _cut_points(starts: list[int], size: int) -> list[int]:
    """Each record start, one byte either side of it, a point inside each record, the
    first and the last byte."""
    points = {1, size - 1}
    for start, end in pairwise([*starts, size]):
        points.update({start - 1, start, start + 1, (start + end) // 2})
    return sorted(p for p in points if 0 < p < size)


def _assert_same_whatever_the_split(path: Path, starts: list[int]) -> list[dict]:
    """Two pieces at every cut point, all cut points at once, and random splits."""
    size = path.stat().st_size
    whole = _rows(path)
    points = _cut_points(starts, size)
    for cut in points:
        assert _rows(path, _byte_parts([cut], size)) == whole, f"cut at {cut}"
    assert _rows(path, _byte_parts(points, size)) == whole
    rng = random.Random(18)
    for _ in range(20):
        cuts = rng.sample(range(1, size), min(6, size - 1))
        assert _rows(path, _byte_parts(cuts, size)) == whole, f"cuts at {sorted(cuts)}"
    return whole


# --- JSON Lines ------------------------------------------------------------------------


def _jsonl_lines() -> list[bytes]:
    return [
        json.dumps({"text": "first document", "url": "https://u/1"}).encode(),
        b"{not json",
        b"",
        json.dumps({"body": "no text key"}).encode(),
        json.dumps({"text": "windows line"}).encode() + b"\r",
        json.dumps({"text": "x" * 70_000}).encode(),  # too_large: past the line cap
        json.dumps({"text": "caf\u00e9 \u65e5\u672c"}, ensure_ascii=False).encode(),
        json.dumps({"text": "last document, no newline"}).encode(),
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_jsonl_rows_are_the_same_whatever_the_split(tmp_path, suffix):
    lines = _jsonl_lines()
    path = tmp_path / f"d{suffix}"
    path.write_bytes(b"\n".join(lines))
    starts = [sum(len(line) + 1 for line in lines[:n]) for n in range(len(lines))]
    whole = _assert_same_whatever_the_split(path, starts)
    assert [row["record"] for row in whole] == [f"line:{n + 1}" for n in (0, 1, 3, 4, 5, 6, 7)]
    reasons = [row[DROP] for row in whole]
    assert reasons == [None, REASON_BAD_JSON, REASON_MISSING_FIELD, None, REASON_TOO_LARGE,
                       None, None]  # fmt: skip
    # the bad line, in a file cut right after its first byte, is rejected exactly once
    split = _rows(path, _byte_parts([starts[1] + 1, starts[3]], path.stat().st_size))
    assert [row[DROP] for row in split].count(REASON_BAD_JSON) == 1


def test_a_piece_without_a_line_start_reads_nothing(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_bytes(json.dumps({"text": "y" * 5000}).encode() + b"\n" + b'{"text": "b"}\n')
    assert _rows(path, [Part(BYTES, 10, 4000)]) == []
    assert [row["text"] for row in _rows(path, [Part(BYTES, 4000, 5020)])] == ["b"]


# --- WARC ------------------------------------------------------------------------------


def _warc(uri: bytes, block: bytes, length: int | None = None, kind: bytes = b"response") -> bytes:
    head = [b"WARC/1.0", b"WARC-Type: " + kind, b"WARC-Target-URI: " + uri,
            b"WARC-Date: 2024-05-18T01:58:10Z", b"Content-Type: application/http",
            b"Content-Length: %d" % (len(block) if length is None else length)]  # fmt: skip
    return b"\r\n".join(head) + b"\r\n\r\n" + block + b"\r\n\r\n"


def _page(number: int) -> bytes:
    body = b"<html><body><p>Page %d says hello.</p>%s</body></html>" % (number, b"." * number)
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body


def _warc_records() -> list[bytes]:
    """Good pages, a record whose Content-Length is wrong, a broken header, junk
    between records, and a page that quotes a WARC line (not at a line start)."""
    return [
        _warc(b"https://a/1", _page(1)),
        _warc(b"https://bad/length", _page(2), length=40),
        _warc(b"https://a/3", _page(3)),
        b"WARC/1.0\r\nthis header line has no colon\r\n\r\n",
        _warc(b"https://a/4", _page(4)) + b"junk between records\r\n",
        _warc(b"https://a/5", _page(5).replace(b"hello", b"hello WARC/1.0")),
        _warc(b"https://a/6", _page(6)),
    ]


def test_plain_warc_rows_are_the_same_whatever_the_split(tmp_path):
    records = _warc_records()
    path = tmp_path / "c.warc"
    path.write_bytes(b"".join(records))
    starts = [sum(len(r) for r in records[:n]) for n in range(len(records))]
    whole = _assert_same_whatever_the_split(path, starts)
    kept = [row["url"] for row in whole if row[DROP] is None]
    assert kept == [f"https://a/{n}" for n in (1, 3, 4, 5, 6)]
    assert [row[DROP] for row in whole].count(REASON_MALFORMED_WARC) == 3


def _gz_members(records: list[bytes]) -> tuple[bytes, list[int]]:
    data, offsets = b"", []
    for record in records:
        offsets.append(len(data))
        data += gzip.compress(record, mtime=0)
    return data, offsets


def test_multi_member_warc_gz_rows_are_the_same_whatever_the_split(tmp_path):
    records = _warc_records()
    data, offsets = _gz_members(records)
    corrupt = bytearray(data)
    broken = offsets[2]  # record 3's member: its deflate data overwritten
    corrupt[broken + 20 : broken + 40] = b"\xff" * 20
    garbage_at = len(corrupt)
    corrupt += b"not a gzip member at all, between two members"
    tail, _ = _gz_members([_warc(b"https://a/7", _page(7)), _warc(b"https://a/8", _page(8))])
    tail_at = len(corrupt)
    corrupt += tail[:-30]  # the last member is truncated
    path = tmp_path / "c.warc.gz"
    path.write_bytes(bytes(corrupt))
    starts = [*offsets, garbage_at, tail_at, tail_at + len(gzip.compress(b"x"))]
    whole = _assert_same_whatever_the_split(path, starts)
    reasons = [(row["record"], row[DROP]) for row in whole if row[DROP] is not None]
    assert (f"offset:{broken}", REASON_CORRUPT_GZIP) in reasons
    assert (f"offset:{garbage_at}", REASON_CORRUPT_GZIP) in reasons
    assert reasons[-1][1] == REASON_TRUNCATED
    kept = [row["url"] for row in whole if row[DROP] is None]
    assert kept == [f"https://a/{n}" for n in (1, 4, 5, 6, 7)]
    # each bad member is rejected once, by the piece in which it starts
    size = path.stat().st_size
    for cut in (broken - 1, broken, broken + 1, garbage_at + 3):
        split = _rows(path, _byte_parts([cut], size))
        assert [r[DROP] for r in split].count(REASON_CORRUPT_GZIP) == 2, f"cut at {cut}"


def test_a_gzip_piece_starts_at_a_member_that_validates(tmp_path):
    """A gzip magic inside a member's data is not a member start: the candidate must
    inflate and begin with ``WARC/``."""
    # stored uncompressed in a record's block: a magic that does not inflate, then a
    # whole gzip member that is no WARC record (a crawled .gz file)
    fake = b"\x1f\x8b\x08" + b"\x00" * 40 + gzip.compress(b"<p>a crawled gzip</p>", mtime=0)
    records = [_warc(b"https://a/1", _page(1) + fake), _warc(b"https://a/2", _page(2))]
    data = b"".join(gzip.compress(r, compresslevel=0, mtime=0) for r in records)
    path = tmp_path / "fake.warc.gz"
    path.write_bytes(data)
    whole = _rows(path)
    assert [row["url"] for row in whole] == ["https://a/1", "https://a/2"]  # 1: binary body
    for cut in (data.index(fake) - 1, data.index(fake) + 44):
        assert _rows(path, _byte_parts([cut], len(data))) == whole


# --- Parquet ---------------------------------------------------------------------------


def test_parquet_row_groups_are_the_same_whatever_the_split(tmp_path):
    texts = [f"document {n}" if n % 5 else None for n in range(23)]
    ids = [f"k{n}" if n % 7 == 3 else None for n in range(23)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": texts, "key": ids}), path, row_group_size=4)
    groups = pq.ParquetFile(path).num_row_groups
    rows_before = [4 * g for g in range(groups + 1)]
    cfg = ReaderConfig(id_field="key")
    whole = list(read_file(str(path), path.name, FS, cfg))
    assert [r["record"] for r in whole][:4] == ["row:0", "row:1", "row:2", "id:k3"]
    assert [r[DROP] for r in whole].count(REASON_MISSING_FIELD) == 5
    for cuts in ([1], [3], [groups - 1], list(range(1, groups)), [2, 5]):
        bounds = [0, *cuts, groups]
        parts = [Part(ROW_GROUPS, a, b, rows_before[a]) for a, b in pairwise(bounds)]
        split = [r for p in parts for r in read_file(str(path), path.name, FS, cfg, p)]
        assert split == whole, f"cuts at {cuts}"


# --- what a piece records for its done marker ------------------------------------------


def test_a_piece_records_the_bytes_it_read(tmp_path):
    lines = [json.dumps({"text": f"line {n}"}).encode() for n in range(50)]
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    parts = _byte_parts([len(data) // 3, 2 * len(data) // 3], len(data))
    table, inputs = read_pieces([(str(path), "d", p) for p in parts], 0, FS, CFG, True)
    assert table.num_rows == 50
    (whole_input,) = read_pieces([(str(path), "d")], 0, FS, CFG, True)[1]
    assert whole_input.spans == ((0, len(data)),)
    assert whole_input.sha256 == hashlib.sha256(data).hexdigest()
    for part, found in zip(parts, inputs, strict=True):
        ((lo, hi),) = found.spans
        assert lo == max(part.start - 1, 0) and hi >= part.stop
        assert found.sha256 == hashlib.sha256(data[lo:hi]).hexdigest()


def test_planning_tells_multi_member_warc_gzip_from_the_rest():
    from stages.byte_streams import warc_gzip_layout

    def layout(data: bytes, probe_bytes: int = 1 << 20) -> str | None:
        return warc_gzip_layout(pa.BufferReader(data), len(data), probe_bytes)

    records = [_warc(b"https://a/%d" % n, _page(n)) for n in range(3)]
    members, _ = _gz_members(records)
    assert layout(members) is None
    assert "single gzip member" in layout(gzip.compress(b"".join(records)))
    assert "no WARC record" in layout(gzip.compress(b"hello") + members)
    assert "not followed" in layout(gzip.compress(records[0]) + b"junk" + members)
    assert "does not inflate" in layout(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 50)
    big = gzip.compress(_warc(b"https://big/", random.Random(1).randbytes(300_000)))
    assert "longer than" in layout(big + members, probe_bytes=100_000)


def test_line_starts_are_counted_in_one_pass():
    import io

    data = b"a\nbb\n\nccc\nd"
    starts = [0, 1, 2, 3, 5, 6, 7, 10, 11]  # lines start at 0, 2, 5, 6 and 10
    line_starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    expected = [sum(start < p for start in line_starts) for p in starts]
    assert count_line_starts(io.BytesIO(data), starts) == expected == [0, 1, 1, 2, 2, 3, 4, 4, 5]
