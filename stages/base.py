"""What every curation stage shares: the document schema, the drop-reason contract,
declared resources and the config base class.

The contract (see DESIGN.md, "Nothing is lost silently"):

* A stage is a class. ``__init__(cfg)`` does all set-up (load a model, compile
  regexes); ``__call__(batch: pa.Table) -> pa.Table`` does the work.
* The runner hands a stage only the *live* rows of a batch (rows no earlier stage
  dropped). The stage returns the same rows, in the same order, with any columns it
  adds or replaces, plus a ``drop_reason`` string column: null keeps the row, a
  string drops it and names the rule. An optional float ``drop_score`` column
  records the value that failed the rule (a language score, a ratio).
* A reason that starts with ``error:`` means the stage failed on that document
  (an exception, a time-out); the ledger counts those as errors, not rejects, so
  that ``input = kept + rejected + errors`` tells the two apart.
* Stage modules never import ``ray``; ``pipeline/ray_exec.py`` is the only module
  that does, and the runner sizes its tasks from the ``Resources`` a stage declares.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from strict_config import StrictModel

DROP_REASON = "drop_reason"
DROP_SCORE = "drop_score"
DROP_STAGE = "drop_stage"
ERROR_PREFIX = "error:"

# Columns a reader fills for every document. Later stages add their own
# (``text``/``title`` from extraction, ``language``/``language_score`` from langid).
DOCUMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # stable, content-derived document id
        ("shard", pa.int32()),  # input shard the document came from
        ("ordinal", pa.int64()),  # position in its shard: fixes the output order
        ("source", pa.string()),  # input file, relative to its input root
        ("record", pa.string()),  # where in the file: "offset:123", "line:7", "row:4"
        ("url", pa.string()),
        ("date", pa.string()),  # fetch date (ISO 8601) where the input has one
        ("format", pa.string()),  # "html", "text" or "code"
        ("code_language", pa.string()),  # from the file extension, for code
        ("html", pa.string()),  # raw page, for format == "html" (null after extract)
        ("text", pa.string()),  # document text (filled by extract for html)
        ("title", pa.string()),
        (DROP_REASON, pa.string()),
        (DROP_SCORE, pa.float64()),
        (DROP_STAGE, pa.string()),
    ]
)


class StageConfig(StrictModel):
    """Base of every stage's config: the project's one strict base (unknown keys are
    errors, values are immutable, each field's docstring is its documentation), named
    for what ``Stage.config_class`` holds."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Resources:
    """What one copy of a stage needs. The stages of a shard run one after another in
    one Ray task, so the task asks for the most ``cpus`` and ``memory_bytes`` any enabled
    stage declares (``pipeline/runner.py``); tokenization's tasks take the tokenizer's."""

    cpus: float = 1.0
    memory_bytes: int | None = None
    """Ray's ``memory`` resource for the task: how much RAM the stage's model needs, so a
    node is not given more copies than it can hold. None: no reservation."""


class Stage:
    """Base class: subclasses set ``name``, ``requires`` and ``resources``."""

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources()
    config_class: ClassVar[type[StageConfig]] = StageConfig

    def __init__(self, cfg: StageConfig) -> None:
        self.cfg = cfg

    def __call__(self, batch: pa.Table) -> pa.Table:  # pragma: no cover - abstract
        raise NotImplementedError


def missing_requirements(stage_class: type[Stage]) -> list[str]:
    """The pip packages a stage needs that this interpreter cannot import."""
    missing = []
    for requirement in stage_class.requires:
        module, _, package = requirement.partition(":")
        if importlib.util.find_spec(module) is None:
            missing.append(package or module)
    return missing


def with_reasons(
    batch: pa.Table,
    reasons: Sequence[str | None],
    scores: Sequence[float | None] | None = None,
) -> pa.Table:
    """Return ``batch`` with its ``drop_reason`` (and ``drop_score``) columns set."""
    if len(reasons) != batch.num_rows:
        raise ValueError(f"{len(reasons)} reasons for {batch.num_rows} rows")
    batch = set_column(batch, DROP_REASON, pa.array(reasons, pa.string()))
    if scores is not None:
        batch = set_column(batch, DROP_SCORE, pa.array(scores, pa.float64()))
    return batch


def set_column(batch: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """Add ``name`` or replace it in place (keeps column order stable across batches)."""
    index = batch.schema.get_field_index(name)
    if index < 0:
        return batch.append_column(name, values)
    return batch.set_column(index, name, values)


def map_documents(
    function: Callable[[Any], Any], values: Iterable[Any]
) -> tuple[list[Any], list[str | None]]:
    """Apply ``function`` to each value; an exception becomes an ``error:`` reason for
    that document instead of failing the whole batch."""
    results: list[Any] = []
    errors: list[str | None] = []
    for value in values:
        try:
            results.append(function(value))
            errors.append(None)
        except Exception as exc:  # one bad document must not end the run
            results.append(None)
            errors.append(f"{ERROR_PREFIX}{type(exc).__name__}")
    return results, errors


def apply_to_live_rows(stage: Stage, batch: pa.Table) -> pa.Table:
    """Run ``stage`` on the rows no earlier stage dropped and put the batch back together.

    Rows dropped earlier skip the stage (a rejected page is not extracted); rows the
    stage drops get ``drop_stage`` set to its name. The result keeps every row, in
    ``ordinal`` order, so the writer can account for each one.
    """
    live_mask = pc.is_null(batch.column(DROP_REASON))
    live = batch.filter(live_mask)
    if live.num_rows == 0:
        return batch
    done = batch.filter(pc.invert(live_mask))
    processed = stage(live)
    if processed.num_rows != live.num_rows:
        raise RuntimeError(
            f"stage {stage.name!r} returned {processed.num_rows} rows for {live.num_rows}"
        )
    newly_dropped = pc.is_valid(processed.column(DROP_REASON))
    stage_names = pc.if_else(
        newly_dropped, pa.scalar(stage.name, pa.string()), pa.nulls(processed.num_rows, pa.string())
    )
    processed = set_column(processed, DROP_STAGE, stage_names)
    merged = pa.concat_tables([processed, done], promote_options="permissive")
    return merged.sort_by("ordinal")
