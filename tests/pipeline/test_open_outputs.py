"""Every output folder of a small curate -> tokenize -> mix run opens as a dataset with
the tools people use: ``pyarrow.dataset`` and Hugging Face ``datasets`` (no zero-row
files, bookkeeping files hidden from both); token files carry the narrow dtype and the
tokenizer and project version in their schema metadata."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from model_hooks.shard_format import LEGACY_MANIFEST_NAME, MANIFEST_NAME, read_manifest
from model_hooks.token_stream import TokenStream

WORDS = [a + b for a in ("ka", "to", "ri", "mo", "su", "le") for b in ("n", "la", "te", "ro")]
MIX = """
seed: 1
packing: {window_sequences: 4}
phases:
  - name: short
    tokens: 3k
    seq_len: 64
    components:
      - {name: all, weight: 1.0, max_epochs: 3}
  - name: long
    tokens: 2k
    seq_len: 128
    rope_theta: 1.0e6
    components:
      - {name: all, weight: 1.0, max_epochs: 3}
"""


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120))) + "."


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_session) -> Path:
    """Three input shards: one without rejects, one whose documents are all duplicates
    (nothing kept), one with a broken record."""
    from pipeline.config import load_curate_config
    from pipeline.mix_config import load_mix
    from pipeline.mixing import prepare_mix
    from pipeline.runner import run_curate
    from pipeline.token_runner import run_mix_on_ray, run_tokenize
    from pipeline.tokenizing import load_tokenize_config, train_tokenizer

    root = tmp_path_factory.mktemp("open-outputs")
    rng = random.Random(5)
    texts = [_text(rng) for _ in range(30)]
    corpus = root / "corpus"
    corpus.mkdir()
    lines = {
        "a.jsonl": [json.dumps({"text": t}) for t in texts[:20]],
        "b.jsonl": [json.dumps({"text": t}) for t in texts[:6]],  # all seen in a.jsonl
        "c.jsonl": [json.dumps({"text": t}) for t in texts[20:]] + ["{not json"],
    }
    for name, rows in lines.items():
        (corpus / name).write_text("\n".join(rows) + "\n")
    (root / "curate.yaml").write_text(
        "inputs: [{path: corpus/*.jsonl, name: text}]\noutput_dir: curated\n"
        "shard_input_bytes: 1\n"  # one file per shard
        "stages: {extract: null, langid: null, heuristics: null, domain: null}\n"
        "ray: {num_cpus: 2}\n"
    )
    run_curate(load_curate_config(root / "curate.yaml"))
    (root / "tokenize.yaml").write_text(
        "curated_dir: curated\noutput_dir: tokenized\n"
        "tokenizer: {tokenizer_path: tokenizer.json}\ntrain: {vocab_size_tokens: 300}\n"
        "ray: {num_cpus: 2}\n"
    )
    config = load_tokenize_config(root / "tokenize.yaml")
    train_tokenizer(config)
    run_tokenize(config)
    (root / "mix.yaml").write_text(MIX)
    mix = load_mix(root / "mix.yaml")
    run_mix_on_ray(mix, prepare_mix(mix, str(root / "tokenized")), str(root), 1)
    return root


def _folders(run: Path) -> dict[str, tuple[Path, str]]:
    """The datasets a run leaves, with their file format."""
    packed = {f"packed/{p.name}": (p, "arrow") for p in sorted((run / "packed").iterdir())}
    return {
        "curated/docs": (run / "curated" / "docs", "parquet"),
        "curated/rejects": (run / "curated" / "rejects", "parquet"),
        "tokenized/docs": (run / "tokenized" / "docs", "parquet"),
        **packed,
    }


def test_the_run_exercised_empty_shards(run: Path) -> None:
    ledger = json.loads((run / "curated" / "ledger.json").read_text())
    assert ledger["shards"] == 3 and ledger["identity_holds"]
    assert ledger["stages"]["exact_dedup"]["rejected"] == {"exact_duplicate": 6}
    assert ledger["stages"]["read"]["rejected"] == {"malformed_json": 1}
    assert len(list((run / "curated" / "docs").glob("*.parquet"))) == 2  # b kept nothing
    assert len(json.loads((run / "curated" / "manifest.json").read_text())["shards"]) == 2
    assert sorted(p.name for p in (run / "packed").iterdir()) == ["long", "short"]


def test_every_output_folder_opens_with_pyarrow_dataset(run: Path) -> None:
    for name, (folder, fmt) in _folders(run).items():
        files = sorted(f for f in folder.iterdir() if not f.name.startswith("."))
        assert files and all(f.suffix == f".{fmt}" for f in files), (name, files)
        dataset = pads.dataset(folder, format=fmt)
        assert sorted(Path(f).name for f in dataset.files) == [f.name for f in files]
        table = dataset.to_table()
        assert table.num_rows > 0, name
        for path in files:  # no zero-row file anywhere
            rows = pq.read_metadata(path).num_rows if fmt == "parquet" else None
            if rows is None:
                with pa.memory_map(str(path)) as source:
                    rows = pa.ipc.open_file(source).read_all().num_rows
            assert rows > 0, path
    rejects = pads.dataset(run / "curated" / "rejects", format="parquet").to_table()
    assert set(rejects.column("stage").to_pylist()) == {"read", "exact_dedup"}


def test_every_output_folder_loads_with_hf_datasets(run: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    for name, (folder, fmt) in _folders(run).items():
        loaded = datasets.load_dataset(fmt, data_dir=str(folder), cache_dir=str(tmp_path))
        want = pads.dataset(folder, format=fmt).count_rows()
        assert loaded["train"].num_rows == want > 0, name


def test_token_dtype_and_schema_metadata(run: Path) -> None:
    tokenized = json.loads((run / "tokenized" / "manifest.json").read_text())
    assert tokenized["vocab_size"] <= 2**16 and tokenized["tokenizer"] == "tokenizer.json"
    schema = pads.dataset(run / "tokenized" / "docs", format="parquet").schema
    assert schema.field("tokens").type == pa.list_(pa.uint16())
    for folder, fmt in [(run / "tokenized" / "docs", "parquet")] + [
        (p, "arrow") for p in (run / "packed").iterdir()
    ]:
        for path in sorted(folder.glob(f"*.{fmt}")):
            if fmt == "parquet":
                schema = pq.read_schema(path)
            else:
                with pa.memory_map(str(path)) as source:
                    schema = pa.ipc.open_file(source).schema
            assert schema.field("tokens").type == pa.list_(pa.uint16()), path
            metadata = {k.decode(): v.decode() for k, v in schema.metadata.items()}
            assert metadata["tokenizer"] == "tokenizer.json"
            assert metadata["tokenizer.sha256"] == tokenized["tokenizer_sha256"]
            assert metadata["tokenizer.vocab_size"] == str(tokenized["vocab_size"])
            assert metadata["longcat_curriculum.version"]


def test_packed_phases_train_and_old_manifest_names_still_read(run: Path) -> None:
    phases = [run / "packed" / "short", run / "packed" / "long"]
    assert all((p / MANIFEST_NAME).is_file() for p in phases)
    assert not any((p / LEGACY_MANIFEST_NAME).exists() for p in phases)
    batch = next(TokenStream(phases, batch_size=2))
    assert batch["tokens"].dtype.is_signed and batch["tokens"].shape == (2, 64)
    want = [b["tokens"] for b in TokenStream(phases, batch_size=4)]
    legacy = run / "legacy"
    for phase in phases:  # a phase packed before the dot name
        (legacy / phase.name).mkdir(parents=True)
        for path in phase.glob("*.arrow"):
            (legacy / phase.name / path.name).write_bytes(path.read_bytes())
        (legacy / phase.name / LEGACY_MANIFEST_NAME).write_text((phase / MANIFEST_NAME).read_text())
    old = [legacy / p.name for p in phases]
    assert read_manifest(old[0]) == read_manifest(phases[0])
    got = [b["tokens"] for b in TokenStream(old, batch_size=4)]
    assert all((a == b).all() for a, b in zip(got, want, strict=True))


def test_every_output_folder_opens_in_duckdb(run: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    for name, (folder, fmt) in _folders(run).items():
        want = pads.dataset(folder, format=fmt).count_rows()
        if fmt == "parquet":  # DuckDB's own reader, on the folder's files
            query = f"select count(*) from read_parquet('{folder}/*.parquet')"
        else:  # Arrow IPC: DuckDB scans the pyarrow dataset (no extension to download)
            con.register("packed", pads.dataset(folder, format="arrow"))
            query = "select count(*), sum(n_tokens) from packed"
        assert con.sql(query).fetchall()[0][0] == want > 0, name
