"""SIGKILL ``python -m pipeline tokenize`` and ``python -m pipeline mix`` part-way; the
same command again does only the missing shards (tokenize) or windows (mix), and the
outputs are byte-identical to an undisturbed run's. (The trainer's kill-and-resume is in
tests/model_hooks.)"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pyarrow as pa
import pytest

from tests.cluster_scripts.harness import VENV_BIN, run_logged, sigkill_when

SHARDS, DOCS_PER_SHARD = 24, 120
WORDS = [a + b for a in ("ka", "to", "ri", "mo", "su", "le") for b in ("n", "la", "te", "ro")]
MIX = """
seed: 3
packing: {window_sequences: 2}
phases:
  - name: pre
    tokens: 120k
    seq_len: 256
    components:
      - {name: web, weight: 0.7, source: "crawl/*", max_epochs: 2}
      - {name: books, weight: 0.3, source: "text/*", max_epochs: 2}
  - name: ctx
    tokens: 60k
    seq_len: 1024
    rope_theta: 5.0e6
    base: pre
    long_doc_share: 0.25
    long_doc_min_tokens: 1024
"""


def _write_curated(root: Path) -> None:
    """A curated folder as ``curate`` leaves it, in enough shards that a kill lands
    between two of them."""
    from pipeline.shards import resolve_filesystem, write_json_atomic, write_parquet_atomic

    rng = random.Random(7)
    filesystem, _ = resolve_filesystem(str(root))
    entries = []
    for number in range(SHARDS):
        source = "text/books.jsonl" if number % 4 == 0 else f"crawl/c{number}.warc.gz"
        words = (1500, 3000) if source.startswith("text") else (60, 400)
        texts = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))) + "."
            for _ in range(DOCS_PER_SHARD)
        ]
        table = pa.table(
            {
                "id": [f"{number}-{i}" for i in range(DOCS_PER_SHARD)],
                "source": [source] * DOCS_PER_SHARD,
                "language": ["en"] * DOCS_PER_SHARD,
                "format": ["text"] * DOCS_PER_SHARD,
                "text": texts,
            }
        )
        file = f"docs/shard-{number:05d}.parquet"
        entries.append({"file": file, **write_parquet_atomic(filesystem, str(root / file), table)})
    write_json_atomic(filesystem, str(root / "manifest.json"), {"shards": entries})


def _digests(folder: Path, pattern: str) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.glob(pattern))
    }


def _tokenize_config(run: Path, output: str) -> Path:
    path = run / f"tokenize-{output}.yaml"
    path.write_text(
        f"curated_dir: curated\noutput_dir: {output}\n"
        "tokenizer: {tokenizer_path: tokenizer.json}\ntrain: {vocab_size_tokens: 300}\n"
        "ray: {num_cpus: 2}\n"
    )
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_session) -> Path:
    """Curated shards, a tokenizer, and the undisturbed tokenize and mix (in the
    session's Ray) to compare the crashed runs with."""
    from pipeline.mix_config import load_mix
    from pipeline.mixing import prepare_mix
    from pipeline.token_runner import run_mix_on_ray, run_tokenize
    from pipeline.tokenizing import load_tokenize_config, train_tokenizer

    root = tmp_path_factory.mktemp("resume-downstream")
    _write_curated(root / "curated")
    train_tokenizer(load_tokenize_config(_tokenize_config(root, "reference")))
    run_tokenize(load_tokenize_config(_tokenize_config(root, "reference")))
    (root / "mix.yaml").write_text(MIX)
    mix = load_mix(root / "mix.yaml")
    run_mix_on_ray(mix, prepare_mix(mix, str(root / "reference")), str(root / "mixed"), 3)
    return root


@pytest.mark.slow
def test_killed_tokenize_reruns_only_the_missing_shards(run):
    config = _tokenize_config(run, "tokenized")
    stats = run / "tokenized" / "stats"
    command = [str(VENV_BIN / "python"), "-m", "pipeline", "tokenize", str(config)]

    sigkill_when(command, lambda: any(stats.glob("*.json")), run / "tokenize-killed.log")
    done = len(list(stats.glob("*.json")))
    assert 1 <= done < SHARDS, f"the kill should land mid-run ({done} of {SHARDS} done)"
    assert not (run / "tokenized" / "manifest.json").exists()

    rerun, _ = run_logged(command, timeout_s=300)
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    counts = re.search(r"\((\d+) shards run, (\d+) already done\)", rerun.stdout)
    assert counts and (int(counts[1]), int(counts[2])) == (SHARDS - done, done), rerun.stdout
    assert _digests(run / "tokenized", "docs/*") == _digests(run / "reference", "docs/*")
    assert _digests(run / "tokenized", "stats/*") == _digests(run / "reference", "stats/*")


@pytest.mark.slow
def test_killed_mix_reruns_only_the_missing_windows(run):
    out = run / "mixed-killed"
    markers = out / "packed" / "pre" / ".windows"
    command = [
        str(VENV_BIN / "python"), "-m", "pipeline", "mix", str(run / "mix.yaml"),
        "--tokenized", str(run / "reference"), "--out", str(out), "--seed", "3",
    ]  # fmt: skip
    reference = _digests(run / "mixed", "packed/*/*.arrow")
    windows = len(reference)

    sigkill_when(command, lambda: any(markers.glob("*.json")), run / "mix-killed.log")
    done = len(list(out.glob("packed/*/.windows/*.json")))
    assert 1 <= done < windows, f"the kill should land mid-run ({done} of {windows} done)"
    assert not (out / "curriculum.json").exists()

    rerun, _ = run_logged(command, timeout_s=300)
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    assert f"({done} windows packed by an earlier run kept)" in rerun.stdout, rerun.stdout
    assert _digests(out, "packed/*/*.arrow") == reference
    assert _digests(out, "packed/*/.manifest.json") == _digests(
        run / "mixed", "packed/*/.manifest.json"
    )
    assert (out / "curriculum.json").read_text() == (run / "mixed" / "curriculum.json").read_text()
