"""A hostile corpus with good documents planted among the bad, and the list of what
must come out of it: every good document kept, every bad record rejected with a reason.

Built in a second or two with under 70 MB of disk: the 50 MB page is written in chunks
and the gzip bombs are assembled from one compressed MiB (with a full flush after each
MiB of zeros a deflate stream repeats, so ``zero_bomb`` copies bytes instead of
compressing 64 MiB). Sources are named as the lister names them: ``fuzz/<path>``.

Deliberate limits of the readers, reflected here: after a corrupt or truncated gzip
member or a bomb, the rest of a gzip stream is one reject (it cannot be trusted past a
broken member), except in a WARC file, whose reading goes on at the next member that
validates (one member per record): a good record is planted after a corrupt member
there, none after a bomb or a truncated member.
"""

from __future__ import annotations

import gzip
import json
import random
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DEMO_TEXT = Path(__file__).resolve().parents[2] / "demo" / "text"
INPUT_NAME = "fuzz"
MAX_DOC_BYTES = 2_000_000  # the fuzz config's cap: every oversized case is well past it
BIG_PAGE_BYTES = 50 * 1024**2
MUTANTS = 96  # randomly damaged small files
BOMB_MIB = 64  # > 10 x MAX_DOC_BYTES at ~1000:1, so the bomb rule fires, not a chunk cap

READ_REASONS = {
    "binary": {"binary_content", "invalid_encoding"},
    "encoding": {"invalid_encoding", "binary_content"},
    "empty": {"empty_document"},
    "large": {"too_large"},
    "gzip": {"corrupt_gzip", "truncated_record", "malformed_warc_record"},
    "warc": {"malformed_warc_record"},
    "http": {"malformed_http_response"},
    "json": {"malformed_json"},
    "field": {"missing_text_field"},
    "truncated": {"truncated_record", "corrupt_gzip"},
}


@dataclass(frozen=True)
class Good:
    source: str
    record: str


@dataclass(frozen=True)
class Bad:
    source: str
    record: str | None  # None: some reject row of the source carries one of the reasons
    reasons: frozenset[str]
    what: str


@dataclass
class FuzzPlan:
    root: Path
    goods: list[Good] = field(default_factory=list)
    bads: list[Bad] = field(default_factory=list)
    tolerated: list[str] = field(default_factory=list)  # kept or rejected: either is fine
    big_files: list[Path] = field(default_factory=list)  # for the memory check

    def source(self, path: Path) -> str:
        return f"{INPUT_NAME}/{path.relative_to(self.root).as_posix()}"

    def good(self, path: Path, record: str = "file") -> None:
        self.goods.append(Good(self.source(path), record))

    def bad(self, path: Path, kind: str | set[str], what: str, record: str | None = "file"):
        reasons = READ_REASONS[kind] if isinstance(kind, str) else kind
        self.bads.append(Bad(self.source(path), record, frozenset(reasons), what))


# --- good text ---------------------------------------------------------------------------


def articles(languages: tuple[str, ...] = ("en", "de", "fr")) -> list[tuple[str, str, list[str]]]:
    """(language, title, paragraphs) of the hand-written demo articles (ours to ship)."""
    found = []
    for language in languages:
        text = (DEMO_TEXT / f"articles_{language}.txt").read_text("utf-8")
        for block in text.split("\n%%\n"):
            head, _, body = block.strip().partition("\n\n")
            meta = dict(line.split(": ", 1) for line in head.splitlines())
            paragraphs = [p.strip() for p in body.split("\n\n") if p.strip()]
            found.append((language, meta["title"], paragraphs))
    return found


class GoodTexts:
    """Distinct good documents: each article in rotations of its paragraphs (the least
    used article first), so no two are exact duplicates and each reads as the prose the
    heuristics keep."""

    def __init__(self) -> None:
        self.pool = articles()
        self.uses = [0] * len(self.pool)

    def next(self, language: str | None = None) -> tuple[str, str]:
        candidates = [i for i, a in enumerate(self.pool) if language in (None, a[0])]
        index = min(candidates, key=lambda i: (self.uses[i], i))
        _, title, paragraphs = self.pool[index]
        shift = self.uses[index]
        if shift >= len(paragraphs):
            raise ValueError("more good documents than distinct rotations")
        self.uses[index] += 1
        return title, "\n\n".join(paragraphs[shift:] + paragraphs[:shift])


def html_page(title: str, body: str, charset: str | None = "utf-8") -> str:
    meta = f'<meta charset="{charset}">' if charset else ""
    paragraphs = "".join(f"<p>{p}</p>\n" for p in body.split("\n\n"))
    return (
        f"<!DOCTYPE html><html><head>{meta}<title>{title}</title></head><body>"
        f"<nav><a href='/'>Home</a></nav><article><h1>{title}</h1>\n{paragraphs}</article>"
        "<footer>Contact us</footer></body></html>"
    )


# --- byte builders -----------------------------------------------------------------------


def zero_bomb(mebibytes: int, prefix: bytes = b"", suffix: bytes = b"") -> bytes:
    """One gzip member inflating to ``prefix``, ``mebibytes`` MiB of zeros, ``suffix``
    (about 1000:1). After a full flush the compressor starts afresh, so each MiB of
    zeros compresses to the same bytes: they are computed once and repeated."""
    chunk = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(suffix) + compressor.flush()
    crc = zlib.crc32(prefix)
    for _ in range(mebibytes):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(suffix, crc)
    size = len(prefix) + (mebibytes << 20) + len(suffix)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return header + head + block * mebibytes + tail + trailer


def http_response(body: bytes, content_type: str = "text/html; charset=utf-8") -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def warc_record(
    uri: str,
    block: bytes,
    *,
    length: str | None = None,
    header_lines: list[bytes] | None = None,
    first_line: bytes = b"WARC/1.0",
) -> bytes:
    """A response record; ``length`` overrides Content-Length (None: the true one)."""
    lines = header_lines or [
        b"WARC-Type: response",
        f"WARC-Target-URI: {uri}".encode(),
        b"WARC-Date: 2026-01-02T03:04:05Z",
        f"WARC-Record-ID: <urn:uuid:{abs(hash(uri)) % 10**12:012d}>".encode(),
        b"Content-Type: application/http; msgtype=response",
        f"Content-Length: {len(block) if length is None else length}".encode(),
    ]
    return first_line + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + block + b"\r\n\r\n"


class WarcWriter:
    """Appends records (one gzip member each when gzipped) and names them as the reader
    does: ``offset:<member offset>`` or, uncompressed, ``offset:<byte offset>``."""

    def __init__(self, plan: FuzzPlan, path: Path) -> None:
        self.plan, self.path, self.gzipped = plan, path, path.name.endswith(".gz")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.out = path.open("wb")

    def add(self, record: bytes, expect: str | set[str] | None = None, what: str = "") -> str:
        """``expect``: None (nothing expected), "good", or a READ_REASONS kind."""
        name = f"offset:{self.out.tell()}"
        self.out.write(gzip.compress(record, mtime=0) if self.gzipped else record)
        self._expect(name, expect, what)
        return name

    def add_raw(self, data: bytes, expect: str | set[str], what: str) -> None:
        name = f"offset:{self.out.tell()}"
        self.out.write(data)
        self._expect(name, expect, what)

    def _expect(self, name: str, expect: str | set[str] | None, what: str) -> None:
        if expect == "good":
            self.plan.good(self.path, name)
        elif expect is not None:
            self.plan.bad(self.path, expect, what, record=name)

    def close(self) -> None:
        self.out.close()


def _good_warc_page(texts: GoodTexts) -> bytes:
    title, body = texts.next()
    return http_response(html_page(title, body).encode())


# --- the corpus ----------------------------------------------------------------------------


def _warcs(plan: FuzzPlan, texts: GoodTexts, rng: random.Random) -> None:
    root = plan.root / "warc"
    page = lambda key: _good_warc_page(texts)  # noqa: E731  (key: readability)
    uri = lambda key: f"https://good.example/{key}"  # noqa: E731

    mixed = WarcWriter(plan, root / "broken-records.warc.gz")
    mixed.add(warc_record(uri("m0"), page("m0")), "good")
    block = page("x1")
    mixed.add(warc_record(uri("x1"), block, length="lots"), "warc", "non-numeric length")
    mixed.add(warc_record(uri("m1"), page("m1")), "good")
    mixed.add(warc_record(uri("x2"), page("x2"), header_lines=[b"WARC-Type: response"]),
              "warc", "no Content-Length")  # fmt: skip
    mixed.add(warc_record(uri("m2"), page("m2")), "good")
    block = page("x3")
    mixed.add(warc_record(uri("x3"), block, length=str(len(block) // 2)), "warc",
              "Content-Length too small")  # fmt: skip
    mixed.add(warc_record(uri("m3"), page("m3")), "good")
    block = page("x4")
    mixed.add(warc_record(uri("x4"), block, length=str(len(block) + 200)), "warc",
              "Content-Length too large")  # fmt: skip
    mixed.add(warc_record(uri("m4"), page("m4")), "good")
    lines = [b"WARC-Type: response", b"this header line has no colon", b"Content-Length: 10"]
    mixed.add(warc_record(uri("x5"), page("x5"), header_lines=lines), "warc", "header no colon")
    mixed.add(warc_record(uri("m5"), page("m5")), "good")
    mixed.add(warc_record(uri("m6"), page("m6")), "good")
    # A record whose WARC line is garbage, after a whole record (its block ends with the
    # blank line): the record before it stays, the garbage is one rejection.
    mixed.add(warc_record(uri("x6"), page("x6"), first_line=b"GARBAGE/9.9 \x00\xff"), "warc",
              "garbage WARC line after a good record")  # fmt: skip
    mixed.add(warc_record(uri("x7"), b"NOT HTTP AT ALL\r\n" + bytes(range(256))),
              {"malformed_http_response", "malformed_warc_record"}, "broken HTTP head")  # fmt: skip
    mixed.add(warc_record(uri("m7"), page("m7")), "good")
    huge = http_response(b"<html><body>" + b"<p>word </p>" * (MAX_DOC_BYTES // 10 * 3))
    mixed.add(warc_record(uri("x8"), huge), "large", "7 MB page, streamed past")
    mixed.add(warc_record(uri("m8"), page("m8")), "good")
    mixed.close()

    plain = WarcWriter(plan, root / "plain.warc")
    plain.add(warc_record(uri("p0"), page("p0")), "good")
    plain.add(warc_record(uri("p1"), page("p1")), "good")
    block = page("x9")
    plain.add(warc_record(uri("x9"), block, length=str(len(block) * 50)), "truncated",
              "length past the end of the file")  # fmt: skip
    plain.close()

    truncated = WarcWriter(plan, root / "truncated-member.warc.gz")
    truncated.add(warc_record(uri("t0"), page("t0")), "good")
    member = gzip.compress(warc_record(uri("x10"), page("x10")), mtime=0)
    truncated.add_raw(member[: len(member) // 2], "truncated", "gzip member cut in half")
    truncated.close()

    corrupt = WarcWriter(plan, root / "corrupt-member.warc.gz")
    corrupt.add(warc_record(uri("c0"), page("c0")), "good")
    member = bytearray(gzip.compress(warc_record(uri("x11"), page("x11")), mtime=0))
    for position in range(30, len(member) - 8, 97):
        member[position] ^= 0x5A
    corrupt.add_raw(bytes(member), "gzip", "flipped bits in a deflate stream")
    corrupt.add(warc_record(uri("c1"), page("c1")), "good")  # read on at the next member
    corrupt.close()

    bomb = WarcWriter(plan, root / "bombs.warc.gz")
    bomb.add(warc_record(uri("b0"), page("b0")), "good")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n\r\n"
    bomb.add(warc_record(uri("x12"), head + zero_bomb(BOMB_MIB)), "large",
             "HTTP body: a gzip bomb")  # fmt: skip
    bomb.add(warc_record(uri("b1"), page("b1")), "good")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
    length = len(head) + (BOMB_MIB << 20)
    prefix = warc_record(uri("x13"), b"", length=str(length))[: -len(b"\r\n\r\n")] + head
    bomb.add_raw(zero_bomb(BOMB_MIB, prefix, b"\r\n\r\n"), "large",
                 "a record of 64 MiB of zeros in one gzip member")  # fmt: skip
    bomb.close()
    plan.big_files.append(bomb.path)

    (root / "not-gzip.warc.gz").write_bytes(b"WARC/1.0\r\nthis is not gzip at all\r\n")
    plan.bad(root / "not-gzip.warc.gz", "gzip", "plain bytes named .gz", record=None)
    for name in ("empty.warc.gz", "empty.warc"):
        (root / name).write_bytes(b"")
        plan.bad(root / name, "empty", "empty file")


def _html(plan: FuzzPlan, texts: GoodTexts, rng: random.Random) -> None:
    root = plan.root / "html"
    root.mkdir(parents=True)
    for index in range(6):
        title, body = texts.next("en")
        path = root / f"good-{index}.html"
        path.write_text(html_page(title, body), "utf-8")
        plan.good(path)
    title, body = texts.next("de")
    (root / "latin1-declared.html").write_bytes(
        html_page(title, body, "iso-8859-1").encode("latin-1", "replace")
    )
    plan.good(root / "latin1-declared.html")
    title, body = texts.next("fr")
    (root / "utf16-bom.htm").write_bytes(html_page(title, body, None).encode("utf-16"))
    plan.good(root / "utf16-bom.htm")
    title, body = texts.next("en")
    smart = html_page(title, body.replace(". ", "\u2019s \u201cnote\u201d. ", 3), None)
    (root / "cp1252-undeclared.html").write_bytes(smart.encode("cp1252"))
    plan.good(root / "cp1252-undeclared.html")
    with gzip.open(root / "good.html.gz", "wt", encoding="utf-8") as out:
        out.write(html_page(*texts.next("en")))
    plan.good(root / "good.html.gz")

    png = b"\x89PNG\r\n\x1a\n" + bytes(rng.getrandbits(8) for _ in range(4000))
    (root / "image.html").write_bytes(png)
    plan.bad(root / "image.html", "binary", "PNG named .html")
    (root / "random.htm").write_bytes(bytes(rng.getrandbits(8) for _ in range(64_000)))
    plan.bad(root / "random.htm", "binary", "random bytes")
    (root / "elf.html").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(4000))
    plan.bad(root / "elf.html", "binary", "ELF header and NULs")
    high = bytes(rng.randrange(0x80, 0x100) for _ in range(20_000))
    (root / "high-bytes.html").write_bytes(b"<html><body><p>" + high + b"</p></body></html>")
    plan.bad(root / "high-bytes.html", "encoding", "undeclared bytes that are no encoding")
    title, body = texts.next("en")
    (root / "utf16-no-bom.html").write_bytes(html_page(title, body).encode("utf-16-le"))
    plan.bad(root / "utf16-no-bom.html", "binary", "UTF-16 without a BOM (NULs)")
    for name, data in (("empty.html", b""), ("blank.html", b" \n\t\r\n  ")):
        (root / name).write_bytes(data)
        plan.bad(root / name, "empty", "empty or blank file")

    big = root / "page-50mb.html"
    with big.open("wb") as out:
        out.write(b"<html><body>")
        chunk = b"<p>" + b"all work and no play " * 4000 + b"</p>\n"
        while out.tell() < BIG_PAGE_BYTES:
            out.write(chunk)
        out.write(b"</body></html>")
    plan.bad(big, "large", "50 MB page")
    plan.big_files.append(big)
    (root / "bomb.html.gz").write_bytes(zero_bomb(BOMB_MIB))
    plan.bad(root / "bomb.html.gz", "large", "gzip bomb")
    plan.big_files.append(root / "bomb.html.gz")
    member = gzip.compress(html_page(*texts.next("en")).encode(), mtime=0)
    (root / "truncated.html.gz").write_bytes(member[: len(member) // 2])
    plan.bad(root / "truncated.html.gz", "truncated", "gzip cut in half", record=None)

    title, body = texts.next("en")
    nested = "<div>" * 100_000 + f"<p>{body}</p>" + "</div>" * 100_000
    (root / "nested-100k.html").write_text(f"<html><body>{nested}</body></html>")
    plan.tolerated.append(plan.source(root / "nested-100k.html"))
    title, body = texts.next("en")
    half = len(body) // 2
    halves = body[:half].encode() + body[half:].encode("cp1252", "replace")
    mixed = html_page(title, "x").encode().replace(b"<p>x</p>", b"<p>" + halves + b"</p>")
    (root / "mixed-encodings.html").write_bytes(mixed)
    plan.tolerated.append(plan.source(root / "mixed-encodings.html"))


def _jsonl(plan: FuzzPlan, texts: GoodTexts) -> None:
    root = plan.root / "text"
    root.mkdir(parents=True)
    lines: list[tuple[bytes, str | None, str]] = []

    def good() -> bytes:
        title, body = texts.next()
        return json.dumps({"text": f"{title}\n\n{body}", "url": "https://j.example/"}).encode()

    lines += [
        (good(), "good", ""),
        (b'{"text": "unterminated', "json", "invalid JSON"),
        (good(), "good", ""),
        (b"[1, 2, 3]", "json", "JSON that is not an object"),
        (b'{"body": "no text field here"}', "field", "missing text field"),
        (b'{"text": 42}', "field", "text is a number"),
        (good(), "good", ""),
        (b'{"text": "lone \\ud800 surrogate"}', "encoding", "lone surrogate escape"),
        (b'{"text": "   "}', "empty", "blank text"),
        (b'{"text": "bad \xff\xfe utf-8"}', {"malformed_json", "invalid_encoding"}, "bad bytes"),
        (b"[" * 100_000 + b"]" * 100_000, "json", "100k nested arrays"),
        (b'{"text": "' + b"long line " * 500_000 + b'"}', "large", "5 MB line"),
        (good(), "good", ""),
    ]
    path = root / "mixed.jsonl"
    with path.open("wb") as out:
        for number, (line, expect, what) in enumerate(lines, start=1):
            record = f"line:{number}"
            out.write(line + b"\n")
            if expect == "good":
                plan.good(path, record)
            elif expect is not None:
                plan.bad(path, expect, what, record=record)
    plan.big_files.append(path)
    (root / "empty.jsonl").write_bytes(b"")
    plan.bad(root / "empty.jsonl", "empty", "empty file")
    (root / "bomb.jsonl.gz").write_bytes(zero_bomb(BOMB_MIB))
    plan.bad(root / "bomb.jsonl.gz", "large", "gzip bomb", record=None)
    plan.big_files.append(root / "bomb.jsonl.gz")


def _other_files(plan: FuzzPlan, texts: GoodTexts, rng: random.Random) -> None:
    tables = plan.root / "tables"
    tables.mkdir(parents=True)
    rows = [f"{t}\n\n{b}" for t, b in (texts.next(), texts.next())]
    pq.write_table(pa.table({"text": [rows[0], None, rows[1]]}), tables / "docs.parquet")
    plan.good(tables / "docs.parquet", "row:0")
    plan.bad(tables / "docs.parquet", "field", "null text", record="row:1")
    plan.good(tables / "docs.parquet", "row:2")
    (tables / "garbage.parquet").write_bytes(bytes(rng.getrandbits(8) for _ in range(5000)))
    plan.bad(tables / "garbage.parquet", {"error:ArrowInvalid", "error:OSError"}, "not Parquet")
    (tables / "empty.parquet").write_bytes(b"")
    plan.bad(tables / "empty.parquet", "empty", "empty file")

    notes = plan.root / "notes"
    notes.mkdir(parents=True)
    title, body = texts.next("en")
    (notes / "bom.txt").write_bytes(f"{title}\n\n{body}".encode("utf-8-sig"))
    plan.good(notes / "bom.txt")
    (notes / "nul.txt").write_bytes(b"text\x00" * 2000)
    plan.bad(notes / "nul.txt", "binary", "NUL bytes")
    (notes / "empty.txt").write_bytes(b"")
    plan.bad(notes / "empty.txt", "empty", "empty file")
    (notes / "elf.py").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(2000))
    plan.bad(notes / "elf.py", "binary", "binary .py")


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One random damage: flipped bytes, a cut, inserted junk, a hole or a repeat."""
    size = len(data)
    a, b = sorted(rng.randrange(size + 1) for _ in range(2))
    operation = rng.randrange(5)
    if operation == 0:
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(size)] ^= rng.randint(1, 255)
        return bytes(damaged)
    if operation == 1:
        return data[:a]
    if operation == 2:
        return data[:a] + rng.randbytes(rng.randint(1, 64)) + data[a:]
    if operation == 3:
        return data[:a] + data[b:]
    return data[:b] + data[a:b] + data[b:]


def _mutants(plan: FuzzPlan, rng: random.Random, count: int = MUTANTS) -> None:
    """Randomly damaged copies of one page in WARC.gz (compressed or plain bytes
    damaged), HTML and JSONL files, one per file. Any outcome is fine but a crash or a
    row that is neither kept nor rejected; Spanish text, so that a mutant that survives
    intact can never be an exact duplicate of a planted good document."""
    root = plan.root / "mutants"
    root.mkdir(parents=True)
    _, title, paragraphs = articles(("es",))[0]
    page = html_page(title, "\n\n".join(paragraphs)).encode()
    record = warc_record("https://mutant.example/", http_response(page))
    line = json.dumps({"text": "\n\n".join(paragraphs)}).encode() + b"\n"
    for index in range(count):
        kind = index % 4
        if kind == 0:
            name, data = f"m{index:03d}.warc.gz", _mutate(gzip.compress(record, mtime=0), rng)
        elif kind == 1:
            name, data = f"m{index:03d}.warc.gz", gzip.compress(_mutate(record, rng), mtime=0)
        elif kind == 2:
            name, data = f"m{index:03d}.html", _mutate(page, rng)
        else:
            name, data = f"m{index:03d}.jsonl", line + _mutate(line, rng) + line
        (root / name).write_bytes(data)
        plan.tolerated.append(plan.source(root / name))


def build_fuzz_corpus(root: Path, seed: int = 0) -> FuzzPlan:
    """Write the corpus under ``root`` (the input folder named ``fuzz``); deterministic."""
    root.mkdir(parents=True, exist_ok=True)
    plan, texts, rng = FuzzPlan(root), GoodTexts(), random.Random(seed)
    _warcs(plan, texts, rng)
    _html(plan, texts, rng)
    _jsonl(plan, texts)
    _other_files(plan, texts, rng)
    _mutants(plan, rng)
    return plan


def fuzz_config(root: Path, output_dir: Path) -> dict:
    """The run config: every stage on, every language kept, a 2 MB document cap."""
    return {
        "inputs": [{"path": str(root), "name": INPUT_NAME}],
        "output_dir": str(output_dir),
        "shard_input_bytes": 1_000_000,
        "reader": {"max_doc_bytes": MAX_DOC_BYTES},
        "stages": {
            "extract": {"timeout_seconds": 5.0},
            "langid": {"languages": None},
            "heuristics": {},
            "exact_dedup": {},
        },
        "ray": {"num_cpus": 2},
    }


def corpus_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
