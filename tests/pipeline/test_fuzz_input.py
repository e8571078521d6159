"""Hostile input at scale through the whole curation run on Ray: truncated and corrupt
gzip, broken WARC records, bad encodings, binary files named .html, a 50 MB page, 100k
nested divs, empty files and gzip bombs. No crash ends the run, every bad record is a
rejects row with its reason, every planted good document comes out, memory stays
bounded by the per-document cap."""

from __future__ import annotations

import json
import tracemalloc
from collections import Counter

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline.config import CurateConfig
from pipeline.runner import run_curate
from stages.readers import ReaderConfig, read_file
from tests.cluster_scripts.fuzz_corpus import (
    MAX_DOC_BYTES,
    build_fuzz_corpus,
    corpus_bytes,
    fuzz_config,
)


@pytest.fixture(scope="module")
def fuzz_run(ray_session, tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    plan = build_fuzz_corpus(base / "fuzz")
    config = CurateConfig.model_validate(fuzz_config(plan.root, base / "out"))
    result = run_curate(config)  # an exception here is a crash that ended the run
    out = base / "out"
    docs = pq.read_table(out / "docs", columns=["source", "record"]).to_pylist()
    rejects = pq.read_table(out / "rejects").to_pylist()
    return plan, result, docs, rejects


def test_every_planted_good_document_comes_out(fuzz_run):
    plan, _, docs, _ = fuzz_run
    kept = {(row["source"], row["record"]) for row in docs}
    lost = [good for good in plan.goods if (good.source, good.record) not in kept]
    assert not lost, f"{len(lost)} of {len(plan.goods)} good documents lost: {lost}"


def test_every_bad_record_is_rejected_with_its_reason(fuzz_run):
    plan, _, _, rejects = fuzz_run
    missed = []
    for bad in plan.bads:
        rows = [
            row
            for row in rejects
            if row["source"] == bad.source and bad.record in (None, row["record"])
        ]
        if not any(row["reason"] in bad.reasons and row["stage"] == "read" for row in rows):
            missed.append((bad, [(r["record"], r["stage"], r["reason"]) for r in rows]))
    assert not missed, missed
    assert all(row["stage"] and row["reason"] for row in rejects)


def test_nothing_unaccounted_and_the_run_survived(fuzz_run):
    plan, result, docs, rejects = fuzz_run
    ledger = result.ledger
    assert ledger["identity_holds"]
    totals = ledger["totals"]
    assert totals["input"] == len(docs) + len(rejects)
    assert len(rejects) == totals["rejected"] + totals["errors"]
    seen = {row["source"] for row in docs} | {row["source"] for row in rejects}
    assert set(plan.tolerated) <= seen
    reasons = Counter(f"{row['stage']}:{row['reason']}" for row in rejects)
    print(
        "\nfuzz run: "
        + json.dumps(
            {
                "corpus_mb": round(corpus_bytes(plan.root) / 1e6, 1),
                "records_tried": totals["input"],
                "kept": len(docs),
                "good_planted": len(plan.goods),
                "bad_planted": len(plan.bads),
                "rejected_by_reason": dict(sorted(reasons.items())),
                "crashes": 0,
            }
        )
    )


def test_reader_memory_is_bounded_by_the_document_cap(tmp_path):
    """The 50 MB page, the bombs (64 MiB inflated each) and a 5 MB JSONL line are read
    with a 2 MB cap: Python's peak allocation stays a small multiple of the cap."""
    plan = build_fuzz_corpus(tmp_path / "fuzz")
    cfg = ReaderConfig(max_doc_bytes=MAX_DOC_BYTES)
    for path in plan.big_files:
        tracemalloc.start()
        try:
            rows = list(read_file(str(path), plan.source(path), pafs.LocalFileSystem(), cfg))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert any(row["drop_reason"] == "too_large" for row in rows), path
        assert peak < 10 * MAX_DOC_BYTES, f"{path.name}: peak {peak / 1e6:.1f} MB"
