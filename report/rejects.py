"""The documents behind the funnel's numbers: examples per reject reason, and kept and
rejected per source, per host and per language.

Why this exists: a count such as "quality_below_min 16" says nothing a data person can
act on until they see three of those documents, and a language being eaten shows only
when kept and rejected are split by language. Everything here is read from the run's
own files: the rejects sink (``curated/rejects/*.parquet``: id, source, url, stage,
reason, score, snippet, and ``language`` where the pipeline recorded it) and the
curated documents (``curated/docs/*.parquet``: source, url, language).

Memory stays bounded on a large run: the files are read in batches of a few columns;
only counts and a handful of examples per reason (and per language and reason) are kept.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.parquet as pq

from pipeline.ledger import CODE, UNKNOWN_LANGUAGE

EXAMPLES_PER_REASON = 5
MAX_SCORES_PER_REASON = 200_000
EXAMPLES_PER_LANGUAGE_REASON = 3
SNIPPET_CHARS = 300
DIMENSIONS = ("source", "host", "language")  # the breakdowns, in page order
# No language: the ledger's "und" (ISO 639 undetermined: dropped before language id), so
# both count the same documents; kept source files count as the ledger's "code".
NO_URL, NO_LANGUAGE, NOT_RECORDED = "(no URL)", UNKNOWN_LANGUAGE, "(not recorded)"
REJECT_COLUMNS = ("id", "source", "url", "stage", "reason", "score", "snippet", "language")


@dataclass
class GroupCounts:
    """One value of a dimension (a source, a host, a language): what was kept, what was
    dropped and why."""

    kept: int = 0
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())


@dataclass
class Drilldown:
    """Per (stage, reason): its rows and first examples; per dimension: group counts."""

    rows: Counter[tuple[str, str]]
    examples: dict[tuple[str, str], list[dict[str, Any]]]
    groups: dict[str, dict[str, GroupCounts]]
    # (language, stage, reason) -> its first examples
    language_examples: dict[tuple[str, str, str], list[dict[str, Any]]]
    # per (stage, reason): the recorded scores, each with its document's language
    scores: dict[tuple[str, str], list[tuple[float, str | None]]]
    rejects_have_language: bool
    docs_read: bool
    # "ledger" when the language groups are the ledger's exact counts (then the rejects
    # sink's rows per language are in sink_language_rows), else "files"
    language_source: str = "files"
    sink_language_rows: dict[str, int] = field(default_factory=dict)


def source_group(source: str | None) -> str:
    """A document's input: ``source`` is the input's name, then the path inside it."""
    return (source or "(unknown)").split("/", 1)[0]


def host_of(url: str | None) -> str:
    if not url:
        return NO_URL
    try:
        return urlsplit(url).hostname or NO_URL
    except ValueError:  # a malformed URL in a crawl is data, not an error
        return NO_URL


def _language(value: str | None, recorded: bool) -> str:
    if not recorded:
        return NOT_RECORDED
    return value or NO_LANGUAGE


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def _batches(path: Path, wanted: tuple[str, ...]):
    present = [c for c in wanted if c in pq.read_schema(path).names]
    for batch in pq.ParquetFile(path).iter_batches(columns=present, batch_size=8192):
        yield batch.to_pylist()


def load_drilldown(curated: Path) -> Drilldown | None:
    """Read the rejects and the curated documents; None when the run has neither."""
    rejects, docs = _files(curated / "rejects"), _files(curated / "docs")
    if not rejects and not docs:
        return None
    groups: dict[str, dict[str, GroupCounts]] = {d: defaultdict(GroupCounts) for d in DIMENSIONS}
    rows: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    by_language: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    scores: dict[tuple[str, str], list[tuple[float, str | None]]] = defaultdict(list)
    has_language = bool(rejects) and all("language" in pq.read_schema(p).names for p in rejects)
    for path in rejects:
        for batch in _batches(path, REJECT_COLUMNS):
            for row in batch:
                key = (row["stage"], row["reason"])
                language = _language(row.get("language"), has_language)
                row["language"] = language
                rows[key] += 1
                if row.get("score") is not None and len(scores[key]) < MAX_SCORES_PER_REASON:
                    scores[key].append((float(row["score"]), row.get("language")))
                for dimension, value in _dimension_values(row, language):
                    groups[dimension][value].reasons[key] += 1
                if len(examples[key]) < EXAMPLES_PER_REASON:
                    examples[key].append(_example(row))
                language_key = (language, *key)
                if len(by_language[language_key]) < EXAMPLES_PER_LANGUAGE_REASON:
                    by_language[language_key].append(_example(row))
    for path in docs:
        for batch in _batches(path, ("source", "url", "language", "format")):
            for row in batch:
                language = _language(row.get("language"), "language" in row)
                if language == NO_LANGUAGE and row.get("format") == "code":
                    language = CODE  # as the ledger counts source files
                for dimension, value in _dimension_values(row, language):
                    groups[dimension][value].kept += 1
    return Drilldown(
        rows=rows,
        examples=dict(examples),
        groups={d: dict(g) for d, g in groups.items()},
        language_examples=dict(by_language),
        scores=dict(scores),
        rejects_have_language=has_language,
        docs_read=bool(docs),
    )


def _dimension_values(row: dict[str, Any], language: str) -> list[tuple[str, str]]:
    return [
        ("source", source_group(row.get("source"))),
        ("host", host_of(row.get("url"))),
        ("language", language),
    ]


def _example(row: dict[str, Any]) -> dict[str, Any]:
    """What a reader needs to find and judge one rejected document."""
    snippet = " ".join((row.get("snippet") or "").split())
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[:SNIPPET_CHARS].rstrip() + "…"
    return {
        "id": row.get("id"),
        "source": row.get("source"),
        "url": row.get("url"),
        "language": row.get("language"),
        "score": row.get("score"),
        "snippet": snippet,
    }


def sorted_groups(groups: dict[str, GroupCounts]) -> list[tuple[str, GroupCounts]]:
    """Largest first (kept + rejected), then by name, so the page is stable."""
    return sorted(groups.items(), key=lambda item: (-(item[1].kept + item[1].rejected), item[0]))


def top_reasons(counts: GroupCounts, n: int = 3) -> str:
    return ", ".join(f"{reason} ({k})" for (_, reason), k in counts.reasons.most_common(n))


def use_ledger_languages(drill: Drilldown, languages: dict[str, Any]) -> None:
    """Take the per-language groups from the ledger (``{language: {"kept": n, "dropped":
    {"stage:reason": n}}}``, counted by the pipeline itself), keeping the rejects sink's
    rows per language beside them as a cross-check."""
    drill.sink_language_rows = {k: g.rejected for k, g in drill.groups["language"].items()}
    groups = {}
    for language, entry in languages.items():
        reasons: Counter[tuple[str, str]] = Counter()
        for key, n in (entry.get("dropped") or {}).items():
            stage, _, reason = key.partition(":")
            reasons[(stage, reason)] += int(n)
        groups[language] = GroupCounts(kept=int(entry.get("kept", 0)), reasons=reasons)
    drill.groups["language"] = groups
    drill.language_source = "ledger"
