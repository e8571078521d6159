"""Ray wiring of the global curation steps: the decisions that need the whole corpus.

Each step reads the documents that survived the steps before it, decides across the
cluster (no process sees every document) and writes one decision table per shard, then
a ``_SUCCESS`` marker. Each step is rounds of Ray tasks on the exchange of
``pipeline/task_rounds.py`` (``exact_wiring.py``, ``minhash_wiring.py``,
``template_wiring.py``). The pure halves (how a group is decided, how a shard applies
its decision) live in the stage modules.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.config import CurateConfig
from pipeline.curate import GlobalStep
from pipeline.exact_wiring import decide_exact_duplicates
from pipeline.minhash_wiring import minhash_step
from pipeline.template_wiring import template_lines_step
from stages.duplicates import DROPS_SCHEMA, split_by_drops
from stages.exact_dedup import (
    REASON_EXACT_DUPLICATE,
    ExactDedupConfig,
)


def _apply_exact(
    documents: pa.Table, decision: pa.Table, settings: ExactDedupConfig
) -> tuple[pa.Table, pa.Table]:
    return split_by_drops(documents, decision, REASON_EXACT_DUPLICATE)


def build_global_steps(config: CurateConfig) -> list[GlobalStep]:
    """The enabled global steps, in run order."""
    steps = []
    if config.stages.exact_dedup is not None:
        steps.append(
            GlobalStep(
                name="exact_dedup",
                settings=config.stages.exact_dedup,
                decision_schema=DROPS_SCHEMA,
                apply=_apply_exact,
                decide=decide_exact_duplicates,
            )
        )
    if config.stages.minhash_dedup is not None:  # after exact: copies are already gone
        steps.append(minhash_step(config.stages.minhash_dedup))
    if config.stages.template_lines is not None:  # last: counts lines of deduplicated text
        steps.append(template_lines_step(config.stages.template_lines))
    return steps
