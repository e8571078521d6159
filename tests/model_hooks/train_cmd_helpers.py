"""Tiny packed phases, a curriculum.json and TRAIN.yaml files for the command tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from model_hooks.synthetic import progression_documents, write_packed_phase
from tests.model_hooks.helpers import TINY

#: (phase, seq_len, rope_theta): two phases, the second longer with another RoPE base.
PHASES = (("short", 32, 1e4), ("long", 64, 5e5))


def write_curriculum(root: Path, n_docs: int = 24) -> Path:
    """``root/packed/<phase>/`` and ``root/curriculum.json`` as ``pipeline mix`` writes
    them (phase dirs relative to the curriculum's folder)."""
    entries = []
    for i, (name, seq_len, theta) in enumerate(PHASES):
        docs = progression_documents(n_docs, TINY.vocab_size, seed=i, max_doc_len=30)
        write_packed_phase(root / "packed" / name, docs, seq_len, TINY.vocab_size, phase=name,
                           rope_theta=theta, rows_per_shard=8)  # fmt: skip
        entries.append({"phase": name, "dir": f"packed/{name}", "seq_len": seq_len,
                        "rope_theta": theta})  # fmt: skip
    path = root / "curriculum.json"
    path.write_text(json.dumps({"mix_file": "test.yaml", "phases": entries}))
    return path


def train_yaml(path: Path, **overrides: Any) -> Path:
    """A TRAIN.yaml next to curriculum.json: the tiny model, a few steps, checkpoints
    every 2 steps, one thread of CPU."""
    model = TINY.model_dump(exclude_unset=True, exclude={"vocab_size"})
    config: dict[str, Any] = {
        "out": "run",
        "curriculum": "curriculum.json",
        "model": model,
        "batch_size": 2,
        "seed": 3,
        "train": {
            "warmup_steps": 2,
            "lr": 1e-2,
            "ckpt_every": 2,
            "device": "cpu",
            "grad_ratio_every": 0,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def lm_losses(metrics: Path) -> list[float]:
    return [json.loads(line)["lm_loss"] for line in metrics.read_text().splitlines()]
