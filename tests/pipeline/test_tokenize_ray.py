"""Tokenize and mix end to end: on Ray and in-process, byte-identical, shares as declared,
documents given back exactly by the packed rows."""

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model_hooks.shard_format import open_shard, read_manifest, validate_rows
from pipeline.cli import main
from pipeline.mix_config import load_mix
from pipeline.mixing import pack_locally, prepare_mix, run_mix
from pipeline.shards import write_json_atomic, write_parquet_atomic
from pipeline.tokenizing import (
    TokenizeShards,
    check_tokenizer,
    load_tokenize_config,
    tokenizer_checksum,
    train_tokenizer,
    write_tokenized_manifest,
)

WORDS = [
    "the",
    "of",
    "data",
    "model",
    "token",
    "river",
    "stone",
    "light",
    "code",
    "value",
    "run",
    "mix",
    "pack",
    "long",
    "short",
]

MIX = """
seed: 1
packing: {window_sequences: 16}
phases:
  - name: pre
    tokens: 12k
    seq_len: 256
    components:
      - {name: web, weight: 0.6, source: "crawl/*", max_epochs: 2}
      - {name: code, weight: 0.25, format: code, max_epochs: 2}
      - {name: books, weight: 0.15, source: "text/books.jsonl"}
  - name: ctx
    tokens: 6k
    seq_len: 1024
    rope_theta: 5.0e6
    base: pre
    long_doc_share: 0.25
    long_doc_min_tokens: 1024
"""


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def _write_curated(root: Path) -> None:
    """A curated run folder as `curate` leaves it: docs shards and manifest.json."""
    from pipeline.shards import resolve_filesystem

    rng = random.Random(0)
    shards = [
        [("crawl/a.warc.gz", "html", _text(rng, rng.randint(40, 150))) for _ in range(60)],
        [
            ("code/m.py", "code", "def f(x):\n    return x + 1\n" * rng.randint(3, 30))
            for _ in range(20)
        ],
        [("text/books.jsonl", "text", _text(rng, 3000)) for _ in range(3)],
    ]
    filesystem, _ = resolve_filesystem(str(root))
    entries = []
    for number, rows in enumerate(shards):
        table = pa.table(
            {
                "id": [f"{number}-{i}" for i in range(len(rows))],
                "source": [r[0] for r in rows],
                "language": ["en"] * len(rows),
                "format": [r[1] for r in rows],
                "text": [r[2] for r in rows],
            }
        )
        file = f"docs/shard-{number:05d}.parquet"
        entries.append({"file": file, **write_parquet_atomic(filesystem, str(root / file), table)})
    write_json_atomic(filesystem, str(root / "manifest.json"), {"shards": entries})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixrun")
    _write_curated(root / "curated")
    (root / "tokenize.yaml").write_text(
        "curated_dir: curated\noutput_dir: tokenized\n"
        "tokenizer: {tokenizer_path: tokenizer.json}\ntrain: {vocab_size_tokens: 400}\n"
    )
    (root / "mix.yaml").write_text(MIX)
    train_tokenizer(load_tokenize_config(root / "tokenize.yaml"))
    return root


def _tokenize_locally(config_path: Path, output_dir: Path) -> None:
    config = load_tokenize_config(config_path).model_copy(update={"output_dir": str(output_dir)})
    entries = json.loads((Path(config.curated_dir) / "manifest.json").read_text())["shards"]
    checksum = tokenizer_checksum(config)
    worker = TokenizeShards(config, entries, checksum)
    for number in range(len(entries)):
        worker.tokenize_shard(number)
    write_tokenized_manifest(config, entries, check_tokenizer(config), checksum)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_ray_run_matches_the_local_run_byte_for_byte(run_dir, ray_session):
    from pipeline.token_runner import run_mix_on_ray, run_tokenize

    result = run_tokenize(load_tokenize_config(run_dir / "tokenize.yaml"))
    assert result.shards_run == 3 and result.manifest["documents"] == 83
    _tokenize_locally(run_dir / "tokenize.yaml", run_dir / "tokenized_local")
    assert _digests(run_dir / "tokenized" / "docs") == _digests(
        run_dir / "tokenized_local" / "docs"
    )

    mix = load_mix(run_dir / "mix.yaml")
    prepared = prepare_mix(mix, str(run_dir / "tokenized"))
    on_ray = run_mix_on_ray(mix, prepared, str(run_dir / "out_ray"), seed=1)
    run_mix(mix, prepared, str(run_dir / "out_local"), 1, pack_locally)
    assert _digests(run_dir / "out_ray") == _digests(run_dir / "out_local")
    assert [m.phase for m in on_ray.manifests] == ["pre", "ctx"]
    again = run_mix_on_ray(mix, prepared, str(run_dir / "out_ray"), seed=1)
    assert again.skipped == ["pre", "ctx"]


def test_two_runs_give_identical_bytes_and_declared_shares(run_dir):
    _tokenize_locally(run_dir / "tokenize.yaml", run_dir / "tok")
    mix = load_mix(run_dir / "mix.yaml")
    prepared = prepare_mix(mix, str(run_dir / "tok"))
    first = run_mix(mix, prepared, str(run_dir / "a"), 1, pack_locally)
    run_mix(mix, prepared, str(run_dir / "b"), 1, pack_locally)
    assert _digests(run_dir / "a") == _digests(run_dir / "b")
    for manifest in first.manifests:
        for component in manifest.components:
            assert abs(component.realised_share - component.declared_share) < 0.01
        assert 0 <= manifest.padding_fraction < 0.2
    other = run_mix(mix, prepared, str(run_dir / "c"), 2, pack_locally)
    assert other.manifests[0].shards[0].sha256 != first.manifests[0].shards[0].sha256


def test_packed_rows_give_the_documents_back(run_dir):
    _tokenize_locally(run_dir / "tokenize.yaml", run_dir / "tok2")
    mix = load_mix(run_dir / "mix.yaml")
    prepared = prepare_mix(mix, str(run_dir / "tok2"))
    result = run_mix(mix, prepared, str(run_dir / "d"), 1, pack_locally)
    documents = {}
    for path in sorted((run_dir / "tok2" / "docs").glob("*.parquet")):
        table = pq.read_table(path)
        documents |= dict(zip(table["id"].to_pylist(), table["tokens"].to_pylist(), strict=True))
    for manifest in result.manifests:
        phase_dir = run_dir / "d" / "packed" / manifest.phase
        assert read_manifest(phase_dir) == manifest
        pieces = {}
        for entry in manifest.shards:
            table = open_shard(phase_dir / entry.file)
            validate_rows(table, manifest.seq_len)
            for row in table.to_pylist():
                cu = row["cu_seqlens"]
                for k, doc in enumerate(row["doc_ids"]):
                    length = cu[k + 1] - cu[k]
                    assert length <= manifest.seq_len
                    whole = documents[doc]
                    offset = row["doc_offsets"][k]
                    assert row["tokens"][cu[k] : cu[k + 1]] == whole[offset : offset + length]
                    pieces.setdefault(doc, []).append(length)
        for doc, lengths in pieces.items():
            if len(documents[doc]) <= manifest.seq_len:  # short documents are never cut
                assert all(n == len(documents[doc]) for n in lengths)
        assert manifest.tokens == sum(sum(v) for v in pieces.values())
        padding = 1 - manifest.tokens / (manifest.rows * manifest.seq_len)
        assert manifest.padding_fraction == pytest.approx(padding, abs=1e-6)
    plan = pq.read_table(run_dir / "d" / "plans" / "ctx.parquet")
    assert np.isin(["web", "code", "books", "long_docs"], plan["component"].to_pylist()).all()


def test_cli_exits_2_on_mix_and_tokenizer_errors(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MIX.replace("weight: 0.6", "weight: 0.5"))
    assert main(["mix", str(bad), "--tokenized", str(run_dir), "--out", str(tmp_path)]) == 2
    assert "phases[0].components: weights" in capsys.readouterr().err
    config = tmp_path / "tokenize.yaml"
    config.write_text(
        f"curated_dir: {run_dir / 'curated'}\noutput_dir: {tmp_path / 'tok'}\n"
        "tokenizer: {tokenizer_path: nowhere.json}\n"
    )
    assert main(["tokenize", str(config)]) == 2
    assert "tokenizer.tokenizer_path: cannot read" in capsys.readouterr().err


def test_tokenize_in_process_matches_ray_byte_for_byte(run_dir, ray_session, caplog):
    """``ray.executor: auto`` at one CPU tokenizes in this process (no Ray tasks): the
    same files as the Ray tasks of the suite's session write."""
    import logging

    from pipeline import ray_exec
    from pipeline.config import RayConfig
    from pipeline.token_runner import run_tokenize

    config = load_tokenize_config(run_dir / "tokenize.yaml")
    on_ray = config.model_copy(update={"output_dir": str(run_dir / "tok_on_ray")})
    run_tokenize(on_ray)
    inside = config.model_copy(
        update={"output_dir": str(run_dir / "tok_inside"), "ray": RayConfig(num_cpus=1)}
    )
    with caplog.at_level(logging.INFO, logger="pipeline"):
        result = run_tokenize(inside)
    assert "ray: not started; the run executes in this process" in caplog.text
    assert result.shards_run == 3 and not ray_exec.in_process()
    assert _digests(run_dir / "tok_inside" / "docs") == _digests(run_dir / "tok_on_ray" / "docs")
