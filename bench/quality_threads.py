"""``python -m bench.quality_threads [OUT]``: the quality classifier trained on one thread
(reproducible, the default) against 11 hogwild threads (the previous default), on the
demo's train-quality set: fit seconds, model digest and held-out figures, twice each.

Writes the demo corpus and configs to OUT (default ``runs/bench-quality``) once."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from demo.corpus import generate_demo_corpus
from pipeline import train_quality as trainer
from pipeline.flow import stage_demo_configs

REPO = Path(__file__).resolve().parent.parent


def main(out: Path) -> None:
    if not (out / "corpus").exists():
        generate_demo_corpus(out / "corpus", seed=0)
    stage_demo_configs(out)
    config = trainer.load_train_config(out / "demo_quality.yaml")
    fit = trainer._train_fasttext
    seconds: list[float] = []

    def timed(*args, **kwargs):
        started = time.perf_counter()
        model = fit(*args, **kwargs)
        seconds.append(time.perf_counter() - started)
        return model

    trainer._train_fasttext = timed
    for threads in (1, 11, 1, 11):
        trainer._TRAIN_THREADS = threads
        report = trainer.train_quality(config)
        row = {
            "threads": report["training_threads"],
            "fit_s": round(seconds[-1], 2),
            "model_sha256": report["files"][report["model"]]["sha256"][:16],
            "heldout": report["heldout"],
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "runs" / "bench-quality")
