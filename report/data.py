"""What the report reads from a run folder, as plain values (no plotting, no HTML).

Each piece of a run is optional: a run that stopped after curation has no packed
phases and no metrics, and its report says so section by section. What is present is
read in full for the numbers (the ledger, the manifests, the metrics) and in bounded
memory for the distributions: per-document values are kept for at most
``MAX_SAMPLE`` documents, a deterministic stride over every shard when there are more.

    RUN_DIR/curated/   ledger.json, funnel.txt, run.json (the config), docs/*.parquet,
                       rejects/*.parquet
    RUN_DIR/tokenized/ docs/shard-*.parquet with id, domain, n_tokens (and tokens, unread)
    RUN_DIR/packed/    <phase>/.manifest.json + shard-*.arrow
    RUN_DIR/curriculum.json   the phase order, written by ``mix`` (optional)
    RUN_DIR/train/     metrics.jsonl, wall-time fields there or in timings*.jsonl (by
                       step), ckpt.pt (only its model_config: the target K_e)
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model_hooks.shard_format import (
    LEGACY_MANIFEST_NAME,
    MANIFEST_NAME,
    PhaseManifest,
    open_shard,
    read_manifest,
)
from pipeline.ledger import stage_changes
from report.rejects import Drilldown, load_drilldown, use_ledger_languages
from report.scores import (
    RuleScores,
    ScoredRule,
    read_run_config,
    rule_scores,
    scored_rules,
    unscored_rules,
)

MAX_SAMPLE = 200_000
# Funnel order when the ledger does not carry one (its JSON keys are sorted by name).
CANONICAL_STAGES = (
    "read", "extract", "langid", "heuristics", "quality", "fluency", "domain",
    "decontaminate", "exact_dedup", "minhash_dedup", "template_lines", "tokenize",
)  # fmt: skip
MINHASH_STAGE, TEMPLATE_STAGE = "minhash_dedup", "template_lines"
CURRICULUM_FILES = ("curriculum.json", "phases.json", "mix.json")


@dataclass
class Funnel:
    ledger: dict[str, Any]
    order: list[str]
    order_source: str  # where the stage order came from
    reject_rows: Counter[tuple[str, str]] | None  # (stage, reason) -> rows in rejects/
    # stage -> (kept documents it rewrote, lines it removed from them): template lines
    changes: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Corpus:
    documents: int
    languages: Counter[str]
    domains: Counter[str]
    domain_source: str | None  # "curated" or "tokenized"; None when no run has domains
    quality: np.ndarray | None
    length_chars: np.ndarray | None
    length_tokens: np.ndarray | None
    sampled: bool
    cluster_sizes: dict[str, int] | None  # near-duplicate cluster size ("9-16") -> clusters
    cluster_source: str | None
    top_lines: list[tuple[str, int]] | None
    tokens_by_domain: Counter[str] | None  # from tokenized/
    tokenized_documents: int | None
    tokenized_tokens: int | None


@dataclass
class Phase:
    manifest: PhaseManifest
    segments_per_row: np.ndarray
    padding_from_shards: float
    example: dict[str, Any] | None  # the first row: cu_seqlens, domains, doc_ids


@dataclass
class RunData:
    run_dir: Path
    funnel: Funnel | None = None
    corpus: Corpus | None = None
    phases: list[Phase] = field(default_factory=list)
    phase_order_source: str = ""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    drilldown: Drilldown | None = None
    run_config: dict[str, Any] | None = None  # curated/run.json's config
    rules: list[ScoredRule] = field(default_factory=list)
    rule_scores: list[RuleScores] = field(default_factory=list)
    unscored_rules: list[ScoredRule] = field(default_factory=list)
    model_config: dict[str, Any] | None = None  # the trained model's config (train/ckpt.pt)


def load_run(run_dir: Path) -> RunData:
    """Everything the report shows, from whatever the run folder holds."""
    run_dir = Path(run_dir)
    curated = run_dir / "curated"
    if not curated.is_dir() and (run_dir / "ledger.json").exists():
        curated = run_dir  # the curated folder itself was given
    data = RunData(run_dir)
    train = run_dir / "train"
    data.metrics = load_metrics(train)
    data.model_config = load_model_config(train / "ckpt.pt") if data.metrics else None
    if (curated / "ledger.json").exists():
        data.funnel = load_funnel(curated)
    data.corpus = load_corpus(curated, run_dir / "tokenized", data.funnel)
    data.drilldown = load_drilldown(curated)
    languages = data.funnel.ledger.get("languages") if data.funnel else None
    if data.drilldown is not None and isinstance(languages, dict) and languages:
        use_ledger_languages(data.drilldown, languages)
    data.run_config = read_run_config(curated)
    if data.run_config is not None:
        data.rules = scored_rules(data.run_config.get("stages") or {})
        dropped = data.drilldown.scores if data.drilldown else {}
        docs = sorted((curated / "docs").glob("*.parquet")) if (curated / "docs").is_dir() else []
        data.rule_scores = rule_scores(data.rules, dropped, docs)
        data.unscored_rules = unscored_rules(data.rules, data.rule_scores)
    data.phases, data.phase_order_source = load_phases(run_dir / "packed", data.metrics)
    return data


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_metrics(train: Path) -> list[dict[str, Any]]:
    """The trainer's per-step records. Wall-time fields may live in a separate timings
    file (``timings*.jsonl``, records keyed by ``step``): they are joined in by step,
    never overwriting a field the metrics record already has."""
    path = train / "metrics.jsonl"
    if not path.exists():
        return []
    records = _jsonl(path)
    by_step = {r["step"]: r for r in records if "step" in r}
    for timings in sorted(train.glob("timings*.jsonl")):
        for timing in _jsonl(timings):
            record = by_step.get(timing.get("step"))
            if record is not None:
                record.update({k: v for k, v in timing.items() if k not in record})
    return records


def load_model_config(ckpt: Path) -> dict[str, Any] | None:
    """The checkpoint's ``model_config`` (memory-mapped: the weights are not read)."""
    if not ckpt.exists():
        return None
    import torch  # only here: the rest of the report needs no torch

    try:
        state = torch.load(ckpt, map_location="cpu", mmap=True, weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError):
        return None  # a checkpoint being written or of another format: K_e unknown
    config = state.get("model_config") if isinstance(state, dict) else None
    return dict(config) if isinstance(config, dict) else None


def load_funnel(curated: Path) -> Funnel:
    ledger = json.loads((curated / "ledger.json").read_text())
    for entry in ledger.setdefault("stages", {}).values():
        entry.setdefault("rejected", {})  # a stage that only counts may leave these out
        entry.setdefault("errors", {})
    order, source = stage_order(ledger, curated / "funnel.txt")
    changes = {
        stage: change
        for stage, entry in ledger["stages"].items()
        if (change := stage_changes(entry)) is not None
    }
    return Funnel(ledger, order, source, _reject_rows(curated / "rejects"), changes)


def stage_order(ledger: dict[str, Any], funnel_txt: Path) -> tuple[list[str], str]:
    """The funnel order: the ledger's own list, else the printed funnel, else the
    canonical pipeline order (the ledger's stage keys are written sorted by name)."""
    names = list(ledger.get("stages", {}))
    declared = ledger.get("stage_order")
    if isinstance(declared, list) and sorted(declared) == sorted(names):
        return list(declared), "ledger stage_order"
    if funnel_txt.exists():
        first_words = [line.split()[0] for line in funnel_txt.read_text().splitlines() if line]
        printed = [word for word in first_words if word in names]
        if sorted(printed) == sorted(names):
            return printed, "funnel.txt"
    rank = {name: i for i, name in enumerate(CANONICAL_STAGES)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), names.index(n))), "canonical"


def _reject_rows(rejects: Path) -> Counter[tuple[str, str]] | None:
    files = sorted(rejects.glob("*.parquet")) if rejects.is_dir() else []
    if not files:
        return None
    counts: Counter[tuple[str, str]] = Counter()
    for path in files:
        table = pq.read_table(path, columns=["stage", "reason"])
        grouped = table.group_by(["stage", "reason"]).aggregate([([], "count_all")])
        for row in grouped.to_pylist():
            counts[(row["stage"], row["reason"])] += row["count_all"]
    return counts


def _sample_mask(rows: int, total: int, seen: int) -> np.ndarray | None:
    """Every k-th row overall (k = total / MAX_SAMPLE), or None to keep all."""
    if total <= MAX_SAMPLE:
        return None
    stride = total / MAX_SAMPLE
    positions = np.arange(seen, seen + rows)
    return (np.floor(positions / stride) != np.floor((positions - 1) / stride)).nonzero()[0]


def _scan(files: list[Path], columns: list[str]) -> tuple[dict[str, list[np.ndarray]], dict]:
    """Per-column value samples and exact value counts of the string columns."""
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    samples: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    counts: dict[str, Counter[str]] = {c: Counter() for c in columns}
    seen = 0
    for path in files:
        present = [c for c in columns if c in pq.read_schema(path).names]
        for batch in pq.ParquetFile(path).iter_batches(columns=present, batch_size=8192):
            take = _sample_mask(batch.num_rows, total, seen)
            seen += batch.num_rows
            for name in present:
                column = batch.column(name)
                if name == "text":
                    column = pc.utf8_length(column)
                if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    counts[name].update(v or "(none)" for v in column.to_pylist())
                    continue
                values = column.to_numpy(zero_copy_only=False).astype(float)
                samples[name].append(values if take is None else values[take])
    return samples, {"total": total, "sampled": total > MAX_SAMPLE, "counts": counts}


def _joined(parts: list[np.ndarray]) -> np.ndarray | None:
    values = np.concatenate(parts) if parts else np.empty(0)
    values = values[np.isfinite(values)]
    return values if values.size else None


def load_corpus(curated: Path, tokenized: Path, funnel: Funnel | None) -> Corpus | None:
    docs = sorted((curated / "docs").glob("*.parquet")) if (curated / "docs").is_dir() else []
    tok_dir = tokenized / "docs" if (tokenized / "docs").is_dir() else tokenized
    tok_files = sorted(tok_dir.glob("*.parquet")) if tok_dir.is_dir() else []
    if not docs and not tok_files:
        return None
    samples, info = _scan(docs, ["language", "domain", "quality_score", "text"])
    tok_samples, tok_info = _scan(tok_files, ["n_tokens"])
    domains, domain_source = info["counts"]["domain"], "curated" if docs else None
    tokenized_tokens, tokens_by_domain = _token_totals(tok_files)
    if not domains and tokens_by_domain:
        domains = _documents_by_domain(tok_files)
        domain_source = "tokenized"
    clusters, cluster_source = cluster_sizes(funnel, curated / "rejects")
    return Corpus(
        documents=info["total"],
        languages=info["counts"]["language"],
        domains=domains,
        domain_source=domain_source if domains else None,
        quality=_joined(samples["quality_score"]),
        length_chars=_joined(samples["text"]),
        length_tokens=_joined(tok_samples["n_tokens"]),
        sampled=info["sampled"] or tok_info["sampled"],
        cluster_sizes=clusters,
        cluster_source=cluster_source,
        top_lines=top_template_lines(funnel),
        tokens_by_domain=tokens_by_domain or None,
        tokenized_documents=tok_info["total"] if tok_files else None,
        tokenized_tokens=tokenized_tokens if tok_files else None,
    )


def _token_totals(files: list[Path]) -> tuple[int, Counter[str]]:
    """All tokens, and tokens per domain (from shards that carry a domain column)."""
    total, by_domain = 0, Counter()
    for path in files:
        names = pq.read_schema(path).names
        if "n_tokens" not in names:
            continue
        table = pq.read_table(path, columns=[c for c in ("domain", "n_tokens") if c in names])
        total += int(pc.sum(table.column("n_tokens")).as_py() or 0)
        if "domain" in names and table.num_rows:
            for row in table.group_by("domain").aggregate([("n_tokens", "sum")]).to_pylist():
                by_domain[row["domain"] or "(none)"] += int(row["n_tokens_sum"] or 0)
    return total, by_domain


def _documents_by_domain(files: list[Path]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in files:
        if "domain" in pq.read_schema(path).names:
            column = pq.read_table(path, columns=["domain"])[0]
            counts.update(v or "(none)" for v in column.to_pylist())
    return counts


def _stage_figure(funnel: Funnel | None, stage: str, key: str) -> Any:
    """A stage's own figure from the ledger: on its entry, or under its ``report``."""
    entry = funnel.ledger.get("stages", {}).get(stage, {}) if funnel else {}
    return entry.get(key) or (entry.get("report") or {}).get(key)


def _size_key(label: str) -> int:
    return int(str(label).split("-")[0].rstrip("+"))


def cluster_sizes(funnel: Funnel | None, rejects: Path) -> tuple[dict[str, int] | None, str | None]:
    """Near-duplicate clusters per size ("2", ..., "9-16": the MinHash stage's histogram
    in the ledger), else counted from the rejects' ``cluster_id`` (a cluster's size is
    its rejected members plus the one document it kept)."""
    histogram = _stage_figure(funnel, MINHASH_STAGE, "cluster_sizes")
    if isinstance(histogram, list):
        histogram = Counter(str(int(v)) for v in histogram)
    if isinstance(histogram, dict) and histogram:
        ordered = sorted(histogram.items(), key=lambda item: _size_key(item[0]))
        return {str(k): int(v) for k, v in ordered}, "ledger"
    files = sorted(rejects.glob("*.parquet")) if rejects.is_dir() else []
    members: Counter[str] = Counter()
    for path in files:
        if "cluster_id" in pq.read_schema(path).names:
            ids = pq.read_table(path, columns=["cluster_id"])[0].drop_null()
            members.update(str(v) for v in ids.to_pylist())
    if not members:
        return None, None
    sizes = sorted(Counter(n + 1 for n in members.values()).items())
    return {str(size): n for size, n in sizes}, "rejects"


def top_template_lines(funnel: Funnel | None) -> list[tuple[str, int]] | None:
    """The template-line stage's ``top_lines`` (records ``{"line", "documents"}``; also
    a ``{line: n}`` dict or ``[line, n]`` pairs), most removed first."""
    raw = _stage_figure(funnel, TEMPLATE_STAGE, "top_lines")
    if not raw:
        return None
    if isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        pairs = [
            (item.get("line", ""), item.get("documents", item.get("count", 0)))
            if isinstance(item, dict)
            else (item[0], item[1])
            for item in raw
        ]
    return sorted(((str(line), int(n)) for line, n in pairs), key=lambda p: -p[1])


def phase_names(packed: Path, metrics: list[dict[str, Any]]) -> tuple[list[str], str]:
    """Phase order: the mix command's curriculum file, else the order the trainer met
    the phases, else by name."""
    found = sorted(
        p.parent.name
        for name in (MANIFEST_NAME, LEGACY_MANIFEST_NAME)
        for p in packed.glob(f"*/{name}")
    )
    for path in [folder / name for folder in (packed, packed.parent) for name in CURRICULUM_FILES]:
        if path.exists():
            declared = _curriculum_phases(json.loads(path.read_text()))
            ordered = [p for p in declared if p in found]
            return ordered + [p for p in found if p not in ordered], path.name
    seen = list(dict.fromkeys(r.get("phase") for r in metrics if r.get("phase") in found))
    if seen:
        return seen + [p for p in found if p not in seen], "training order"
    return found, "by name"


def _curriculum_phases(data: Any) -> list[str]:
    items = data.get("phases", []) if isinstance(data, dict) else data
    return [
        item if isinstance(item, str) else item.get("phase", item.get("name")) for item in items
    ]


def load_phases(packed: Path, metrics: list[dict[str, Any]]) -> tuple[list[Phase], str]:
    if not packed.is_dir():
        return [], ""
    names, source = phase_names(packed, metrics)
    return [load_phase(packed / name) for name in names], source


def load_phase(phase_dir: Path) -> Phase:
    """The manifest, and from the shards (memory-mapped; only the small list columns are
    touched) segments per row, the padding fraction and the first row as an example."""
    manifest = read_manifest(phase_dir)
    segments, used, example = [], 0, None
    for entry in manifest.shards:
        table = open_shard(phase_dir / entry.file)
        if table.num_rows == 0:
            continue
        segments.append(pc.list_value_length(table.column("cu_seqlens")).to_numpy() - 1)
        used += int(pc.sum(table.column("n_tokens")).as_py())
        if example is None:
            example = table.select(["cu_seqlens", "domains", "doc_ids", "n_tokens"]).slice(0, 1)
            example = example.to_pylist()[0]
    per_row = np.concatenate(segments) if segments else np.empty(0, dtype=np.int64)
    slots = per_row.size * manifest.seq_len
    padding = 1.0 - used / slots if slots else 0.0
    return Phase(manifest, per_row, padding, example)
