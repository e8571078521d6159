"""A run folder (``out_dir``) as a local run writes it: ``ckpt.pt``, ``metrics.jsonl`` and
``timings.jsonl``. ``RunFolder`` is the loop's ``RunLog`` for a run in this process; a
Ray Train run's workers report instead (``model_hooks.ray_train.RayReports``) and the
driver leaves the same three files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model_hooks.checkpoint import save_checkpoint
from model_hooks.model import Model

CKPT_NAME, METRICS_NAME, TIMINGS_NAME = "ckpt.pt", "metrics.jsonl", "timings.jsonl"


def _keep_metrics_until(path: Path, step: int) -> None:
    """On resume, drop log lines of steps the checkpoint does not contain."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


class RunFolder:
    """``out_dir`` as a local run writes it: ckpt.pt, metrics.jsonl and timings.jsonl
    (wall times in their own file keep metrics.jsonl reproducible). A resume keeps the
    log lines up to the checkpoint's step; a fresh run starts fresh logs."""

    def __init__(self, out_dir: Path, resumed_step: int | None) -> None:
        self.ckpt_path = out_dir / CKPT_NAME
        logs = (out_dir / METRICS_NAME, out_dir / TIMINGS_NAME)
        for path in logs:
            if resumed_step is None:
                path.unlink(missing_ok=True)
            else:
                _keep_metrics_until(path, resumed_step)
        self._metrics, self._timings = (path.open("a") for path in logs)

    def log(self, record: dict, timing: dict) -> None:
        for file, line in ((self._metrics, record), (self._timings, timing)):
            file.write(json.dumps(line) + "\n")
            file.flush()

    def checkpoint(
        self, model: Model, opt: torch.optim.Optimizer, data: dict, state: dict, record: dict
    ) -> None:
        save_checkpoint(self.ckpt_path, model, opt, data, state)

    def close(self) -> None:
        self._metrics.close()
        self._timings.close()
