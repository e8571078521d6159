"""The demo corpus: deterministic, well-formed where it should be, broken where it should
be, and holding every kind of document the funnel is meant to sort.

The WARC check is a local parser (gzip member by member) so that these tests do not
depend on the project's own reader, which they are meant to feed.
"""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from demo.corpus import (
    CLEAN_SCAN_ERRORS,
    DATA_DIR,
    MIN_BOOK_WORDS,
    NEAR_DUP_JACCARD,
    POOR_SCAN_ERRORS,
    _handwritten_articles,
    _ocr,
    _spin,
    generate_demo_corpus,
)

KINDS = (
    "good_articles", "spam", "duplicates", "near_duplicates", "languages", "code_files",
    "spun", "briefs", "scans", "stem_docs", "long_docs", "non_html_records", "bad_files",
)  # fmt: skip
SKIPPED = ("non_html", "http_404", "http_301")  # records a reader drops without a row
REPO = Path(__file__).resolve().parents[2]


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _members(data: bytes) -> list[bytes]:
    """Each gzip member of a file, inflated; the demo writes one WARC record per member."""
    members = []
    while data:
        inflater = zlib.decompressobj(wbits=31)
        members.append(inflater.decompress(data) + inflater.flush())
        assert inflater.eof, "a gzip member is truncated"
        data = inflater.unused_data
    return members


def _parse_record(raw: bytes) -> tuple[dict[str, str], bytes, bool]:
    """Headers, block, and whether Content-Length matches the bytes in the member."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"WARC/1.0\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    length = int(headers["Content-Length"])
    assert rest.endswith(b"\r\n\r\n")
    block = rest[:-4]
    return headers, rest[:length], length == len(block)


@pytest.fixture(scope="module")
def corpus(demo_corpus: Path) -> Path:
    """The session's seed-0 corpus (conftest), generated once for all test modules."""
    return demo_corpus


def test_same_seed_same_bytes_other_seed_other_bytes(corpus, tmp_path):
    again = tmp_path / "again"
    counts = generate_demo_corpus(again, seed=0)
    assert _digests(again) == _digests(corpus)
    assert generate_demo_corpus(again, seed=0) == counts  # a rerun into its own folder
    other = tmp_path / "other"
    generate_demo_corpus(other, seed=1)
    assert _digests(other) != _digests(corpus)


def test_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_demo_corpus(tmp_path)


def test_counts_cover_every_kind(corpus, tmp_path):
    counts = generate_demo_corpus(tmp_path / "c", seed=3)
    assert all(counts[kind] > 0 for kind in KINDS), counts
    assert counts["languages"] == 6
    assert counts["good_articles"] > 5 * counts["languages"]
    assert counts["bad_files"] == 5


def test_warc_files_parse_with_one_damaged_record(corpus):
    files = sorted((corpus / "crawl").glob("*.warc.gz"))
    assert 2 <= len(files) <= 3
    bad, pages, types, statuses = 0, 0, set(), set()
    for path in files:
        records = [_parse_record(m) for m in _members(path.read_bytes())]
        assert records[0][0]["WARC-Type"] == "warcinfo"
        requests = {}
        for headers, block, length_ok in records:
            bad += not length_ok
            if headers["WARC-Type"] == "request":
                requests[headers["WARC-Concurrent-To"]] = headers["WARC-Target-URI"]
            if headers["WARC-Type"] != "response" or not length_ok:
                continue
            assert requests.pop(headers["WARC-Record-ID"]) == headers["WARC-Target-URI"]
            http_head, _, body = block.partition(b"\r\n\r\n")
            status = http_head.split(b"\r\n")[0].decode()
            fields = dict(x.split(": ", 1) for x in http_head.decode().split("\r\n")[1:])
            assert int(fields["Content-Length"]) == len(body)
            statuses.add(status.split(" ")[1])
            types.add(fields["Content-Type"].split(";")[0])
            pages += status == "HTTP/1.1 200 OK" and fields["Content-Type"].startswith("text/html")
    assert bad == 1
    assert pages >= 120
    assert {"text/html", "image/png", "text/plain"} <= types
    assert {"200", "404", "301"} <= statuses


def test_text_inputs_and_labels(corpus):
    books = [json.loads(line) for line in (corpus / "text" / "books.jsonl").open()]
    assert len(books) >= 2
    assert all(len(book["text"].split()) >= MIN_BOOK_WORDS for book in books)
    stem = [json.loads(line) for line in (corpus / "text" / "stem.jsonl").open()]
    assert stem and all(doc["text"].strip() for doc in stem)
    suffixes = {p.suffix for p in (corpus / "code").iterdir()}
    assert {".py", ".go", ".rs", ".c", ".js"} <= suffixes
    labels = json.loads((corpus / "labels.json").read_text())
    near = [v for v in labels.values() if v["kind"] == "near_duplicate"]
    assert near and all(NEAR_DUP_JACCARD[0] <= v["jaccard"] <= 0.95 for v in near)
    originals = {key.split(" ", 1)[-1] for key, v in labels.items() if v["kind"] == "article"}
    originals |= {v.get("url") for v in labels.values()}
    assert all(v["of"] in originals for v in labels.values() if "of" in v)


def test_bad_inputs_are_bad(corpus):
    html = corpus / "html"
    assert (html / "empty.html").stat().st_size == 0
    with pytest.raises(UnicodeDecodeError):
        (html / "legacy-cp1252.html").read_bytes().decode("utf-8")
    assert (html / "image.html").read_bytes().startswith(b"\x89PNG")
    inflater = zlib.decompressobj(wbits=31)
    inflater.decompress((html / "truncated.html.gz").read_bytes())
    assert not inflater.eof


def test_small(corpus):
    assert sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()) < 10_000_000
    assert sum(p.stat().st_size for p in DATA_DIR.rglob("*") if p.is_file()) < 300_000


def test_project_reader_keeps_the_rest_of_the_damaged_file(corpus):
    readers = pytest.importorskip("stages.readers")
    fs = pytest.importorskip("pyarrow.fs").LocalFileSystem()
    labels = json.loads((corpus / "labels.json").read_text())
    for path in sorted((corpus / "crawl").glob("*.warc.gz")):
        source = f"crawl/{path.name}"
        rows = list(readers.read_file(str(path), source, fs, readers.ReaderConfig()))
        mine = {k.split(" ", 1)[1]: v["kind"] for k, v in labels.items() if k.startswith(source)}
        assert {r["url"] for r in rows} == {u for u, kind in mine.items() if kind not in SKIPPED}
        damaged = {r["url"] for r in rows if r["drop_reason"] == readers.REASON_MALFORMED_WARC}
        assert damaged == {u for u, kind in mine.items() if kind == "bad:warc_content_length"}


def _demo_stage(name: str) -> dict:
    config = yaml.safe_load((REPO / "configs" / "demo_curate.yaml").read_text())
    return config["stages"][name]


def test_fluency_and_template_cases_are_labelled(corpus):
    labels = json.loads((corpus / "labels.json").read_text())
    urls = {key.split(" ", 1)[-1] for key, v in labels.items() if v["kind"] == "article"}
    urls |= {v.get("url") for v in labels.values()}
    spun = [v for v in labels.values() if v["kind"] == "spam:spun"]
    assert spun and all(v["source"] in urls for v in spun)
    rates = [v["error_rate"] for key, v in sorted(labels.items()) if v["kind"] == "scan"]
    assert len(rates) >= 4
    for i, rate in enumerate(rates):  # scan-0, scan-1, ...: clean and poor by turns
        low, high = POOR_SCAN_ERRORS if i % 2 else CLEAN_SCAN_ERRORS
        assert low <= rate <= high
    # Briefs on both sides of the run's bar: some keep enough own text, some do not.
    own = [v["own_chars"] for v in labels.values() if v["kind"] == "brief"]
    bar = _demo_stage("template_lines")["min_remaining_chars"]
    assert min(own) < bar <= max(own)


def test_spun_text_passes_the_heuristics_and_fails_word_order(corpus):
    """What the spun pages are for: every heuristic rule of the demo run lets them
    through, and only the fluency stage's word-order rule, with a model fitted on the
    corpus's own reference text, catches them, while the article they came from passes."""
    from stages.fluency import REASON_WORD_SALAD, Fluency, FluencyConfig
    from stages.heuristics import Heuristics, HeuristicsConfig
    from stages.word_order import WordOrderModel

    reference = [json.loads(line)["text"] for line in (corpus / "text" / "stem.jsonl").open()]
    model = WordOrderModel.fit(reference, order=3, vocabulary_size=150)
    rng = random.Random(0)
    articles = [a for a in _handwritten_articles() if a.lang == "en"]
    originals = ["\n".join([a.title, *a.paragraphs]) for a in articles]
    spun = ["\n".join([a.title, *(_spin(p, rng) for p in a.paragraphs)]) for a in articles]
    table = pa.table({"text": originals + spun, "format": ["html"] * (2 * len(articles))})
    judged = Heuristics(HeuristicsConfig(**_demo_stage("heuristics")))(table)
    assert judged.column("drop_reason").null_count == judged.num_rows
    path = corpus.parent / "words.npz"
    model.save(path)
    fluency = _demo_stage("fluency") | {"lm_path": None, "word_model_path": str(path)}
    reasons = Fluency(FluencyConfig(**fluency))(table).column("drop_reason").to_pylist()
    assert reasons == [None] * len(articles) + [REASON_WORD_SALAD] * len(articles)


def test_ocr_noise_rate():
    text = "the quick brown fox jumps over the lazy dog " * 20
    assert _ocr(text, 0.0, random.Random(0)) == text
    noisy = _ocr(text, 0.2, random.Random(0))
    changed = sum(a != b for a, b in zip(text, noisy, strict=False)) / len(text)
    assert noisy != text and changed > 0.02  # some letters misread (alignment shifts after)
    assert "rn" in _ocr("m" * 200, 1.0, random.Random(0))  # a typical two-character confusion
