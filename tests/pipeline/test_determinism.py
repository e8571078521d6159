"""Trainers whose output feeds the whole pipeline give the same bytes twice (issue 15:
two demo runs differed in 76 files because the fastText quality model trained hogwild).

Each trainer runs twice in fresh processes, and once more in this process after the
heap was filled with leftovers; every file it writes must have the same digest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import train_quality as trainer
from tests.cluster_scripts.harness import REPO
from tests.quality_data import write_labelled_set


def _digests(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def _run(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env, check=True,
        capture_output=True, timeout=600,
    )  # fmt: skip


def _dirty_the_heap() -> None:
    """Leave freed blocks full of non-zero bytes (and pointers) where malloc finds them."""
    blocks = [bytearray(os.urandom(64)) * (1 + size % 5000) for size in range(3000)]
    del blocks[::2]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    return write_labelled_set(tmp_path_factory.mktemp("labelled"))


def test_the_quality_model_trains_to_the_same_bytes(labelled):
    model_dir = labelled.parent / "model"
    _run("train-quality", str(labelled))
    first = _digests(model_dir)
    _run("train-quality", str(labelled))
    assert _digests(model_dir) == first
    _dirty_the_heap()
    report = trainer.train_quality(trainer.load_train_config(labelled))
    assert _digests(model_dir) == first
    assert report["training_threads"] == 1
    assert json.loads((model_dir / "quality.json").read_text())["training_threads"] == 1


def test_the_hogwild_path_is_what_differs(labelled, monkeypatch):
    """The same training on 11 threads (the previous default): not the same model twice.
    (Shows the test above can fail; on a rare lucky schedule two runs could agree, so
    three tries.)"""
    monkeypatch.setattr(trainer, "_TRAIN_THREADS", 11)
    config = trainer.load_train_config(labelled)
    digests = set()
    for _ in range(3):
        model = trainer._train_fasttext(["good science text"] * 5 + POSITIVE, NEGATIVE, config)
        digests.add(hashlib.sha256(model.get_input_matrix().tobytes()).hexdigest())
    assert len(digests) > 1


POSITIVE = [f"the cell membrane regulates transport of ions number {i}" for i in range(200)]
NEGATIVE = [f"buy cheap pills now click here offer {i} free" for i in range(200)]


TOKENIZER_SCRIPT = """
import hashlib, random, sys
from stages.tokens import train_byte_level_bpe
rng = random.Random(7)
letters = "abcdefghij klmnop"
words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(400)]
texts = [" ".join(rng.choice(words) for _ in range(60)) for _ in range(500)]
tokenizer = train_byte_level_bpe(texts, 600, "<|endoftext|>", 2)
print(hashlib.sha256(tokenizer.to_str().encode()).hexdigest())
"""


def test_the_tokenizer_trains_to_the_same_bytes():
    """The BPE trainer counts words in hash maps whose order changes per process; the
    merges (ties broken by pair ids) and the saved file must not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    digests = set()
    for threads in ("1", "2", "2"):
        run = subprocess.run(
            [sys.executable, "-c", TOKENIZER_SCRIPT], cwd=REPO, capture_output=True, text=True,
            env={**env, "RAYON_NUM_THREADS": threads}, check=True, timeout=300,
        )  # fmt: skip
        digests.add(run.stdout.strip())
    assert len(digests) == 1, digests
