"""The main job through Ray on the demo corpus: the funnel, the accounting identity,
idempotent reruns and the output contract."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_curate_config
from pipeline.runner import run_curate

REPO = Path(__file__).resolve().parent.parent


def _digest_tree(root: Path, folder: str) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / folder).rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def demo_run(ray_session, demo_corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    shutil.copytree(demo_corpus, run_dir / "corpus")
    config_path = run_dir / "demo_curate.yaml"
    config_path.write_text((REPO / "configs" / "demo_curate.yaml").read_text())
    config = load_curate_config(config_path)
    result = run_curate(config)
    return config, result, Path(config.output_dir)


def test_funnel_and_accounting_identity(demo_run):
    _, result, out = demo_run
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger == result.ledger
    assert ledger["identity_holds"]
    totals = ledger["totals"]
    assert totals["input"] == totals["kept"] + totals["rejected"] + totals["errors"]
    assert list(ledger["stages"]) == ["read", "extract", "langid", "heuristics", "exact_dedup"]
    for stage in ("read", "langid", "heuristics", "exact_dedup"):
        assert ledger["stages"][stage]["rejected"], f"the demo should exercise {stage} rejects"
    rejects = pq.read_table(out / "rejects").to_pylist()
    assert len(rejects) == totals["rejected"] + totals["errors"]
    assert all(row["stage"] and row["reason"] for row in rejects)
    dups = [row for row in rejects if row["reason"] == "exact_duplicate"]
    assert dups and all(row["duplicate_of"] for row in dups)


def test_output_contract(demo_run):
    _, result, out = demo_run
    docs = pq.read_table(out / "docs")
    assert docs.num_rows == result.ledger["documents_written"] > 0
    for column in ("id", "source", "url", "text", "language", "language_score", "format"):
        assert column in docs.column_names
    ids = docs.column("id").to_pylist()
    assert len(ids) == len(set(ids))
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(s["rows"] for s in manifest["shards"]) == docs.num_rows
    for entry in manifest["shards"]:
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    languages = set(docs.column("language").to_pylist())
    assert {"en", "de"} <= languages
    assert "code" in set(docs.column("format").to_pylist())


def test_rerun_skips_finished_shards_and_gives_identical_bytes(demo_run):
    config, first, out = demo_run
    before = _digest_tree(out, "docs") | _digest_tree(out, "rejects")
    again = run_curate(config)
    assert again.shards_run == 0 and again.shards_skipped == first.shards_run
    assert _digest_tree(out, "docs") | _digest_tree(out, "rejects") == before
    assert again.ledger == first.ledger


def test_lost_shard_is_redone_identically(demo_run):
    config, first, out = demo_run
    before = _digest_tree(out, "docs")
    (out / "work" / "documents" / "00001.json").unlink()
    (out / "docs" / "shard-00001.parquet").unlink()
    (out / "stats" / "00001.json").unlink()
    again = run_curate(config)
    assert again.shards_run == 1
    assert _digest_tree(out, "docs") == before
    assert again.ledger == first.ledger
