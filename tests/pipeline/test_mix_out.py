"""``mix`` into a folder that holds another mix file's curriculum is refused (its phases
would be repacked, or left beside the new ones) unless ``--overwrite``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.mix_config import load_mix
from pipeline.mixing import claim_mix_out, reset_phase_dir

MIX = """
seed: 1
phases:
  - name: {phase}
    tokens: 1k
    seq_len: 64
    components:
      - {{name: all, weight: 1.0}}
"""


def _mix(root: Path, name: str, phase: str):
    path = root / name
    path.write_text(MIX.format(phase=phase))
    return load_mix(path)


def test_another_mix_file_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first, second = _mix(tmp_path, "a.yaml", "pre"), _mix(tmp_path, "b.yaml", "mid")
    claim_mix_out(out, first, overwrite=False)  # a new folder
    (out / "packed" / "pre").mkdir(parents=True)
    (out / "packed" / "pre" / "shard-00000.arrow").write_bytes(b"x")
    (out / "plans").mkdir()
    (out / "plans" / "pre.parquet").write_bytes(b"x")
    (out / "curriculum.json").write_text(
        json.dumps({"mix_file": "a.yaml", "phases": [{"phase": "pre", "dir": "packed/pre"}]})
    )
    claim_mix_out(out, first, overwrite=False)  # the same mix file again: fine
    with pytest.raises(ConfigError, match=r"holds the curriculum of a\.yaml .* not b\.yaml"):
        claim_mix_out(out, second, overwrite=False)
    assert (out / "packed" / "pre").is_dir()  # nothing removed by a refusal
    claim_mix_out(out, second, overwrite=True)
    assert not (out / "packed" / "pre").exists() and not (out / "plans" / "pre.parquet").exists()
    assert not (out / "curriculum.json").exists()


def test_a_phase_reset_removes_only_what_the_packer_wrote(tmp_path: Path) -> None:
    phase = tmp_path / "packed" / "pre"
    (phase / ".windows").mkdir(parents=True)
    written = ["shard-00000.arrow", "shard-00001.arrow.tmp", ".manifest.json", "manifest.json",
               ".progress.json", ".windows/00000.json"]  # fmt: skip
    for name in written:
        (phase / name).write_bytes(b"x")
    (phase / "notes.txt").write_text("mine")
    (phase / "shard-1.arrow").write_bytes(b"not a packer name")
    outside = tmp_path / "precious.arrow"
    outside.write_bytes(b"keep")
    (phase / "shard-00002.arrow").symlink_to(outside)
    reset_phase_dir(str(phase))
    assert sorted(p.name for p in phase.iterdir()) == [
        "notes.txt",
        "shard-00002.arrow",
        "shard-1.arrow",
    ]
    assert outside.read_bytes() == b"keep"
