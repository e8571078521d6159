"""bench.gpu_check: it skips cleanly without CUDA, and its procedure runs (on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import gpu_check


def test_skips_cleanly_without_cuda(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert "no CUDA device" in out and "skipped" in out


def test_the_procedure_runs_on_cpu(tmp_path: Path, capsys) -> None:
    """``--device cpu``: parity of CPU against itself is exact, the speed part reports
    the kernels that ran and tokens/s for every length."""
    assert gpu_check.main(["--device", "cpu", "--quick", "--json", str(tmp_path / "g.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["parity"]["first_step_rel_diff"] == 0.0
    assert result["parity"]["cpu_lm_loss"] == result["parity"]["device_lm_loss"]
    speed = result["speed"]
    assert speed["attention_backend"] == "segments" and speed["expert_path"] == "grouped_mm"
    assert all(p["tokens_per_s"] > 0 for p in speed["phases"].values())
    rows = json.loads((tmp_path / "g.json").read_text())["rows"]
    assert rows and rows[0]["measure"].startswith("train_step tokens/s")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_parity_on_cuda() -> None:
    assert gpu_check.main(["--quick"]) == 0
