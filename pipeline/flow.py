"""The main job, end to end on one run folder: curate -> train a tokenizer -> tokenize
-> mix and pack the curriculum -> train the MoE phase after phase -> report.

Every step is also a command of its own (``python -m pipeline curate|train-tokenizer|
tokenize|mix|train|report``); this module only chains them over the folder layout the
report reads::

    RUN/corpus/  RUN/curated/  RUN/tokenizer.json  RUN/tokenized/
    RUN/plans/   RUN/packed/<phase>/  RUN/curriculum.json  RUN/train/  RUN/report.html

Each step skips what its own markers say is done, so rerunning the demo after a crash
finishes the missing work.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"
DEMO_FILES = (
    "demo_curate.yaml", "demo_quality.yaml", "demo_tokenize.yaml", "demo_model.yaml",
    "demo_train.yaml",
)  # fmt: skip
DEMO_MIX = REPO_ROOT / "mixes" / "demo.yaml"


def stage_demo_configs(out: Path) -> None:
    """Copy the demo's configs next to its corpus: their relative paths name the run folder."""
    out.mkdir(parents=True, exist_ok=True)
    for name in DEMO_FILES:
        shutil.copyfile(CONFIGS / name, out / name)
    for eval_file in CONFIGS.glob("demo_eval*"):  # the decontamination sets it names
        shutil.copyfile(eval_file, out / eval_file.name)


def train_on_curriculum(
    out: Path, steps: int | None, batch_size: int | None = None, model_config: Path | None = None
) -> int:
    """``python -m pipeline train OUT/demo_train.yaml``: the bundled MoE over the packed
    phases in curriculum order (``steps=None``: every batch of every phase). A batch size
    or model file given here replaces the config's."""
    from pipeline.train_cmd import train_command

    overrides: dict[str, object] = {}
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    if model_config is not None:
        overrides["model"] = str(model_config)
    return train_command(out / "demo_train.yaml", steps, overrides)
