"""Batches for the heuristics stage's tests: texts with a language, as the stage sees
them after extraction and language id."""

from __future__ import annotations

import pyarrow as pa

from stages.base import DOCUMENT_SCHEMA
from stages.heuristics import Heuristics, HeuristicsConfig


def batch_of(texts: list[str], languages: list[str | None]) -> pa.Table:
    n = len(texts)
    columns = {field.name: pa.nulls(n, field.type) for field in DOCUMENT_SCHEMA}
    columns["text"] = pa.array(texts, pa.string())
    columns["format"] = pa.array(["html"] * n, pa.string())
    table = pa.table(columns, schema=DOCUMENT_SCHEMA)
    return table.append_column("language", pa.array(languages, pa.string()))


def verdicts(texts: list[str], languages: list[str | None], **config) -> list[str | None]:
    """The stage's drop reason for each text (None: kept), under ``config``."""
    out = Heuristics(HeuristicsConfig(**config))(batch_of(texts, languages))
    return out.column("drop_reason").to_pylist()
