import gzip
import json
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from stages.base import DOCUMENT_SCHEMA, DROP_REASON, DROP_STAGE
from stages.readers import (
    REASON_BAD_JSON,
    REASON_BINARY,
    REASON_CORRUPT_GZIP,
    REASON_EMPTY,
    REASON_INVALID_ENCODING,
    REASON_MALFORMED_HTTP,
    REASON_MALFORMED_WARC,
    REASON_MISSING_FIELD,
    REASON_TOO_LARGE,
    REASON_TRUNCATED,
    REASON_UNSUPPORTED,
    ReaderConfig,
    decode_bytes,
    document_id,
    read_file,
    read_shard,
    reader_kind,
)

FS = pafs.LocalFileSystem()
CFG = ReaderConfig()
PAGE = b"<html><head><title>t</title></head><body><p>Hello page %d</p></body></html>"
GOOD_HTML = b"<html><body><p>A good page after the bad one.</p></body></html>"


def _read(path: Path, cfg: ReaderConfig = CFG) -> list[dict]:
    return list(read_file(str(path), path.name, FS, cfg))


def _http(body: bytes, status: int = 200, content_type: bytes = b"text/html") -> bytes:
    head = b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nServer: t\r\n\r\n" % (status, content_type)
    return head + body


def _warc(
    kind: bytes, block: bytes, uri: bytes = b"", length: int | None = None, broken: bool = False
) -> bytes:
    lines = [b"WARC/1.0", b"WARC-Type: " + kind, b"WARC-Date: 2024-05-18T01:58:10Z"]
    if uri:
        lines.append(b"WARC-Target-URI: " + uri)
    if kind in (b"response", b"request"):
        lines.append(b"Content-Type: application/http; msgtype=" + kind)
    lines.append(b"WARC-Broken-Header-Line" if broken else b"WARC-Record-ID: <urn:uuid:1>")
    lines.append(b"Content-Length: %d" % (len(block) if length is None else length))
    return b"\r\n".join(lines) + b"\r\n\r\n" + block + b"\r\n\r\n"


def _good_record(number: int) -> bytes:
    return _warc(b"response", _http(PAGE % number), b"https://ok.example/%d" % number)


def _write_gz_members(path: Path, records: list[bytes]) -> list[int]:
    """Gzip per record, as Common Crawl writes them; returns each member's offset."""
    offsets, data = [], b""
    for record in records:
        offsets.append(len(data))
        data += gzip.compress(record, mtime=0)
    path.write_bytes(data)
    return offsets


def _write_gzip_bomb(path: Path, prefix: bytes, zeros_mib: int, before: bytes = b"") -> None:
    """``prefix`` then ``zeros_mib`` MiB of zeros as one valid gzip member, written without
    holding the zeros: after a full flush deflate forgets its history, so every MiB of
    zeros compresses to the same bytes."""
    mib = bytes(1 << 20)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    crc = zlib.crc32(prefix)
    with path.open("wb") as handle:
        handle.write(before)
        handle.write(compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH))
        repeated = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
        for _ in range(zeros_mib):
            handle.write(repeated)
            crc = zlib.crc32(mib, crc)
        finish = compressor.flush()  # final block + trailer; the trailer must cover all
        size = (len(prefix) + zeros_mib * len(mib)) & 0xFFFFFFFF
        handle.write(finish[:-8] + struct.pack("<II", crc, size))


def _reasons(rows: list[dict]) -> list[str | None]:
    return [row[DROP_REASON] for row in rows]


def test_warc_yields_only_html_200_responses(tmp_path):
    records = [
        _warc(b"warcinfo", b"software: test\r\n"),
        _warc(b"request", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"https://a.example/"),
        _good_record(1),
        _warc(b"metadata", b"fetchTimeMs: 5\r\n", b"https://a.example/"),
        _warc(b"response", _http(b"\x89PNG...", content_type=b"image/png"), b"https://i/"),
        _warc(b"response", _http(b"<html>gone</html>", status=404), b"https://gone/"),
        _good_record(2),
    ]
    path = tmp_path / "a.warc.gz"
    offsets = _write_gz_members(path, records)
    rows = _read(path)
    assert [r["url"] for r in rows] == ["https://ok.example/1", "https://ok.example/2"]
    assert [r["record"] for r in rows] == [f"offset:{offsets[2]}", f"offset:{offsets[6]}"]
    assert rows[0]["html"] == (PAGE % 1).decode()
    assert rows[0]["date"] == "2024-05-18T01:58:10Z"
    assert {(r["format"], r["text"], r[DROP_REASON], r["source"]) for r in rows} == {
        ("html", None, None, "a.warc.gz")
    }
    assert [r["id"] for r in _read(path)] == [r["id"] for r in rows]  # stable across reads
    assert rows[0]["id"] != rows[1]["id"]


def test_uncompressed_warc_and_chunked_body(tmp_path):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/html\r\n\r\n"
    chunked += b"6\r\n<html>\r\n7\r\n</html>\r\n0\r\n\r\n"
    path = tmp_path / "plain.warc"
    first = _good_record(1)
    path.write_bytes(first + _warc(b"response", chunked, b"https://c/"))
    rows = _read(path)
    assert [r["html"] for r in rows] == [(PAGE % 1).decode(), "<html></html>"]
    assert [r["record"] for r in rows] == ["offset:0", f"offset:{len(first)}"]


def test_ids_depend_on_content_and_place():
    base = document_id("a/b.warc.gz", "offset:0", b"x")
    assert base == document_id("a/b.warc.gz", "offset:0", b"x") and len(base) == 32
    assert base != document_id("a/b.warc.gz", "offset:0", b"y")
    assert base != document_id("a/b.warc.gz", "offset:1", b"x")
    assert document_id("ab", "c", b"") != document_id("a", "bc", b"")


def test_html_files_plain_and_gzipped(tmp_path):
    (tmp_path / "p.html").write_bytes(PAGE % 1)
    (tmp_path / "q.html.gz").write_bytes(gzip.compress(PAGE % 2))
    for name, number in (("p.html", 1), ("q.html.gz", 2)):
        (row,) = _read(tmp_path / name)
        assert (row["html"], row["format"], row["record"]) == (
            (PAGE % number).decode(),
            "html",
            "file",
        )
        assert row[DROP_REASON] is None


def test_jsonl_rows_and_bad_lines(tmp_path):
    lines = [
        json.dumps({"text": "first doc", "url": "https://u/1", "doc_id": "A"}),
        "{not json",
        "",
        json.dumps({"body": "no text key"}),
        json.dumps({"text": "  "}),
        json.dumps({"text": "last doc"}),
    ]
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    rows = _read(path, ReaderConfig(id_field="doc_id"))
    assert _reasons(rows) == [None, REASON_BAD_JSON, REASON_MISSING_FIELD, REASON_EMPTY, None]
    assert [r["record"] for r in rows] == ["id:A", "line:2", "line:4", "line:5", "line:6"]
    assert (rows[0]["text"], rows[0]["url"], rows[0]["format"]) == (
        "first doc",
        "https://u/1",
        "text",
    )
    assert {r[DROP_STAGE] for r in rows[1:4]} == {"read"}
    assert rows[4]["text"] == "last doc"


def test_parquet_with_configured_field(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"content": ["one", None, "three"], "link": ["u1", "u2", None]}), path)
    rows = _read(path, ReaderConfig(text_field="content", url_field="link"))
    assert _reasons(rows) == [None, REASON_MISSING_FIELD, None]
    assert [r["record"] for r in rows] == ["row:0", "row:1", "row:2"]
    assert [r["text"] for r in rows] == ["one", None, "three"]
    assert [r["url"] for r in rows] == ["u1", "u2", None]
    assert _reasons(_read(path)) == [REASON_MISSING_FIELD] * 3  # no "text" column at all


def test_source_and_text_files(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    return 1\n")
    (tmp_path / "r.md").write_text("# Title\n\nSome words.\n")
    (code,) = _read(tmp_path / "m.py")
    (text,) = _read(tmp_path / "r.md")
    assert (code["format"], code["code_language"], code["text"]) == (
        "code", "python", "def f():\n    return 1\n"
    )  # fmt: skip
    assert (text["format"], text["code_language"], text["html"]) == ("text", None, None)


def test_reader_kind_by_suffix():
    kinds = {
        "a/CC.warc.gz": "warc", "x.WARC": "warc", "p.htm": "html", "p.html.gz": "html",
        "d.json.gz": "jsonl", "t.parquet": "parquet", "m.h": "code", "n.rst": "text",
        "crawl.warc.wet.gz": "warc", "img.png": None, "Makefile": None,
    }  # fmt: skip
    assert {path: reader_kind(path) for path in kinds} == kinds


def _shard_rows(tmp_path: Path, bad_name: str, bad: bytes | None = None) -> list[dict]:
    """Read a bad file then a good one: the bad one must not stop the shard."""
    if bad is not None:
        (tmp_path / bad_name).write_bytes(bad)
    (tmp_path / "good.html").write_bytes(GOOD_HTML)
    names = [bad_name, "good.html"]
    table = read_shard([(str(tmp_path / n), n) for n in names], 7, FS, CFG)
    assert table.schema.equals(DOCUMENT_SCHEMA)
    assert table["ordinal"].to_pylist() == list(range(table.num_rows))
    assert set(table["shard"].to_pylist()) == {7}
    rows = table.to_pylist()
    assert rows[-1]["source"] == "good.html" and rows[-1][DROP_REASON] is None
    return rows[:-1]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("cut.html.gz", gzip.compress(PAGE % 1 * 50)[:-30], REASON_TRUNCATED),
        ("png.html", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, REASON_BINARY),
        ("noise.html", bytes(range(128, 256)) * 40, REASON_INVALID_ENCODING),
        ("empty.html", b"", REASON_EMPTY),
        ("empty.jsonl", b"", REASON_EMPTY),
        ("empty.warc.gz", b"", REASON_EMPTY),
        ("junk.warc.gz", b"this is not gzip at all", REASON_CORRUPT_GZIP),
        ("r.unknown", b"x", REASON_UNSUPPORTED),
        ("broken.parquet", b"PAR1 not really", "error:ArrowInvalid"),
    ],
)
def test_bad_files_give_one_reject_row(tmp_path, name, data, reason):
    (row,) = _shard_rows(tmp_path, name, data)
    assert (row[DROP_REASON], row[DROP_STAGE], row["source"]) == (reason, "read", name)
    assert row["html"] is None and row["text"] is None and len(row["id"]) == 32


def test_missing_file_is_an_error_row(tmp_path):
    (row,) = _read(tmp_path / "gone.html")
    assert row[DROP_REASON] == "error:FileNotFoundError"


def test_corrupt_member_costs_itself_only(tmp_path):
    """A corrupt member of a multi-member WARC file is one rejection; the records before
    it and after it (from the next member that validates) are kept."""
    path = tmp_path / "c.warc.gz"
    offsets = _write_gz_members(path, [_good_record(1), _good_record(2), _good_record(3)])
    data = bytearray(path.read_bytes())
    data[offsets[1] + 20 : offsets[1] + 40] = b"\xff" * 20  # inside member 2's deflate data
    rows = _shard_rows(tmp_path, path.name, bytes(data))
    assert _reasons(rows) == [None, REASON_CORRUPT_GZIP, None]
    assert [r["record"] for r in rows] == [f"offset:{offset}" for offset in offsets]
    assert rows[2]["url"] == "https://ok.example/3"


@pytest.mark.parametrize("gzipped", [False, True])
def test_broken_warc_records_are_rejected_and_reading_resyncs(tmp_path, gzipped):
    short = _warc(b"response", _http(PAGE % 2), b"https://short/", length=40)
    long = _warc(b"response", _http(PAGE % 3), b"https://long/", length=len(PAGE) + 400)
    broken = _warc(b"response", _http(PAGE % 4), b"https://broken/", broken=True)
    records = [_good_record(1), short, _good_record(5), broken, long, _good_record(6)]
    name = "r.warc.gz" if gzipped else "r.warc"
    data = b"".join(gzip.compress(r) for r in records) if gzipped else b"".join(records)
    rows = _shard_rows(tmp_path, name, data)
    kept = [r["url"] for r in rows if r[DROP_REASON] is None]
    assert kept == ["https://ok.example/1", "https://ok.example/5", "https://ok.example/6"]
    assert _reasons(rows).count(REASON_MALFORMED_WARC) == 3
    assert {r["url"] for r in rows if r[DROP_REASON]} == {
        "https://short/", "https://long/", None  # the broken header never got read as a record
    }  # fmt: skip


def test_response_without_http_head(tmp_path):
    path = tmp_path / "h.warc"
    path.write_bytes(_warc(b"response", b"no http head here", b"https://x/") + _good_record(1))
    assert _reasons(_read(path)) == [REASON_MALFORMED_HTTP, None]


def test_truncated_warc_record(tmp_path):
    data = gzip.compress(_good_record(1)) + gzip.compress(_good_record(2))[:-50]
    rows = _shard_rows(tmp_path, "t.warc.gz", data)
    assert _reasons(rows) == [None, REASON_TRUNCATED]


def test_charset_detection():
    latin = b'<html><head><meta charset="iso-8859-1"></head><body>caf\xe9 \x80</body></html>'
    assert "café €" in decode_bytes(latin, ["iso-8859-1"])[0]
    assert decode_bytes("naïve".encode("utf-16"))[0] == "naïve"  # BOM
    assert decode_bytes("日本語".encode("euc-jp"), ["EUC-JP"])[0] == "日本語"
    assert decode_bytes(b"plain caf\xe9 text")[0] == "plain café text"  # text-like: cp1252
    assert decode_bytes(bytes(range(128, 256)) * 4) == (None, REASON_INVALID_ENCODING)
    assert decode_bytes(b"a\x00b\x00c\x00d\x00") == (None, REASON_BINARY)


def test_latin1_page_with_meta_charset(tmp_path):
    (tmp_path / "l.html").write_bytes(b'<meta charset="latin1"><p>Fa\xe7ade \xe0 Paris</p>')
    (row,) = _read(tmp_path / "l.html")
    assert "Façade à Paris" in row["html"]


def test_large_page_is_rejected_without_holding_it(tmp_path):
    cfg = ReaderConfig(max_doc_bytes=2_000_000)
    words = os.urandom(10_500_000).hex().encode()  # compresses like text, not like a bomb
    page = b"<html><body><p>" + words + b"</p></body></html>"
    assert len(page) > 20_000_000
    (tmp_path / "big.html").write_bytes(page)
    big_record = _warc(b"response", _http(page), b"https://big/")
    (tmp_path / "big.warc.gz").write_bytes(
        gzip.compress(big_record, 1) + gzip.compress(_good_record(1))
    )
    del page, big_record
    tracemalloc.start()
    try:
        rows = _read(tmp_path / "big.html", cfg) + _read(tmp_path / "big.warc.gz", cfg)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _reasons(rows) == [REASON_TOO_LARGE, REASON_TOO_LARGE, None]
    assert rows[1]["url"] == "https://big/" and rows[1]["html"] is None
    assert peak_bytes < 10_000_000  # the 20 MB page was streamed past, never held


def test_gzip_bomb_is_too_large(tmp_path):
    _write_gzip_bomb(tmp_path / "bomb.html.gz", b"<html>", 1024)  # 1 GiB of zeros
    (row,) = _shard_rows(tmp_path, "bomb.html.gz")
    assert row[DROP_REASON] == REASON_TOO_LARGE


def test_gzip_bomb_inside_warc_stops_the_file(tmp_path):
    path = tmp_path / "bomb.warc.gz"
    head = _http(b"<html>")
    record_head = _warc(b"response", b"", b"https://bomb/", length=len(head) + (1 << 30))
    first = gzip.compress(_good_record(1))
    _write_gzip_bomb(path, record_head[:-4] + head, 1024, first)
    rows = _shard_rows(tmp_path, "bomb.warc.gz")
    assert _reasons(rows) == [None, REASON_TOO_LARGE]
    assert rows[1]["record"] == f"offset:{len(first)}"


@pytest.mark.parametrize("gzipped", [False, True])
def test_junk_after_a_whole_record_costs_the_junk_not_the_record(tmp_path, gzipped):
    junk = b"\x00\x17 not a record at all\r\nmore junk\r\n"
    records = [_good_record(1) + junk, _good_record(2), _good_record(3) + b"trailing junk"]
    name = "j.warc.gz" if gzipped else "j.warc"
    data = b"".join(gzip.compress(r) for r in records) if gzipped else b"".join(records)
    rows = _shard_rows(tmp_path, name, data)
    kept = [r["url"] for r in rows if r[DROP_REASON] is None]
    assert kept == [f"https://ok.example/{n}" for n in (1, 2, 3)]
    junk_rows = [r for r in rows if r[DROP_REASON] is not None]
    assert [r[DROP_REASON] for r in junk_rows] == [REASON_MALFORMED_WARC] * 2
    assert all(r["url"] is None for r in junk_rows)
    first_junk = len(_good_record(1))
    expected = f"offset:0+{first_junk}" if gzipped else f"offset:{first_junk}"
    assert junk_rows[0]["record"] == expected
