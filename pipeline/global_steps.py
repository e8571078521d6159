"""The global curation steps, in run order: the decisions that need the whole corpus.

Each step is a declaration of rounds (``exact_rounds.py``, ``minhash_rounds.py``,
``template_rounds.py``) that ``round_driver.py`` runs: it reads the documents that
survived the steps before it, decides across the cluster (no process sees every
document) and writes one decision table per shard, then a ``_SUCCESS`` marker. The pure
halves (how a group is decided, how a shard applies its decision) live in the stage
modules.
"""

from __future__ import annotations

from pipeline.config import CurateConfig
from pipeline.curate import GlobalStep
from pipeline.exact_rounds import EXACT_DEDUP
from pipeline.minhash_rounds import MINHASH_DEDUP
from pipeline.round_driver import global_step
from pipeline.round_step import RoundStep
from pipeline.template_rounds import TEMPLATE_LINES

# In run order: MinHash after exact (copies are already gone), template lines last
# (they count the lines of deduplicated text). The key is the step's config section.
GLOBAL_STEPS: dict[str, RoundStep] = {
    "exact_dedup": EXACT_DEDUP,
    "minhash_dedup": MINHASH_DEDUP,
    "template_lines": TEMPLATE_LINES,
}


def build_global_steps(config: CurateConfig) -> list[GlobalStep]:
    """The enabled global steps, in run order."""
    limit = config.ray.driver_round_max_bytes
    return [
        global_step(step, settings, limit)
        for name, step in GLOBAL_STEPS.items()
        if (settings := getattr(config.stages, name)) is not None
    ]
