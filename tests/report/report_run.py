"""A small synthetic run folder in the real layouts, for the report's tests.

A ledger made by ``pipeline.ledger`` (funnel order in funnel.txt, JSON keys sorted as
the runner writes them), curated and rejects Parquet, tokenized shards (one empty),
two packed phases written with ``model_hooks.shard_format``, a curriculum file whose
order differs from the phases' names, and a trainer's metrics log with the gaps
(``null``) the real one has.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model_hooks.shard_format import (
    PACKED_SCHEMA,
    ComponentShare,
    PhaseManifest,
    write_manifest,
    write_shard,
)
from pipeline.ledger import build_ledger, render_funnel

DOMAINS = ("web", "stem", "code", "books")
LAYERS = 3
TARGET_FFN_EXPERTS = 1.5
# What the run's config recorded (curated/run.json): the thresholds the report draws.
RUN_CONFIG = {
    "stages": {
        "langid": {"min_score": 0.65, "min_score_by_language": {"de": 0.5, "ja": 0.3}},
        "heuristics": {
            "presets": ["gopher_quality", "gopher_repetition", "c4"],
            "overrides": {"gopher_quality": {"min_words": 40}},
            "language_overrides": {"zh": {"gopher_quality": {"min_words": 20}}},
        },
        "minhash_dedup": {"threshold": 0.8},
    }
}
# The language of a rejected document, per stage (None: dropped before language id).
REJECT_LANGUAGES = {
    "langid": ["la"] * 5 + ["en", "de"],
    "heuristics": ["zh", "zh", "zh", "zh", "en", "zh"],
    "exact_dedup": ["en"],
    "minhash_dedup": ["en", "de"],
}
HOSTS = ("news.example", "blog.example", None)
LONG_TEMPLATE_LINE = "Read our cookie policy and our terms of use before you go on. " * 4


def build_run(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    ledger = _write_curated(root / "curated", rng)
    _write_tokenized(root / "tokenized", rng, ledger["documents_written"])
    _write_phase(
        root / "packed" / "pretrain",
        "pretrain",
        64,
        [("web", 0.6, 0.59, 30, 0.5), ("code", 0.4, 0.41, 12, 1.25)],
        rng,
    )
    _write_phase(
        root / "packed" / "long",
        "long",
        128,
        [("web", 0.75, 0.7512, 8, 0.25), ("long_docs", 0.25, 0.2488, 3, 2.0)],
        rng,
    )
    (root / "curriculum.json").write_text(json.dumps({"phases": [
        {"phase": "pretrain", "dir": "packed/pretrain"}, {"phase": "long", "dir": "packed/long"},
    ]}))  # fmt: skip
    (root / "train").mkdir()
    lines = [json.dumps(r) for r in _metrics(12, rng)]
    (root / "train" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return root


def entry(input_rows: int, rejected: dict, errors: dict | None = None) -> dict:
    errors = errors or {}
    dropped = sum(rejected.values()) + sum(errors.values())
    return {"input": input_rows, "kept": input_rows - dropped, "rejected": rejected,
            "errors": errors}  # fmt: skip


def _write_curated(curated: Path, rng: np.random.Generator) -> dict:
    stages: dict = {}
    flow = [
        ("read", {"binary_content": 2, "empty_document": 1}, {}),
        ("extract", {"no_extractable_text": 3}, {"error:extract_timeout": 1}),
        ("langid", {"language_not_selected": 5, "language_score_below_min": 2}, {}),
        ("heuristics", {"gopher_too_few_words": 4, "c4_too_few_sentences": 2}, {}),
        ("exact_dedup", {"exact_duplicate": 3}, {}),
        ("minhash_dedup", {"near_duplicate": 4}, {}),
        ("template_lines", {}, {}),
    ]
    remaining = 70
    for name, rejected, errors in flow:
        stages[name] = entry(remaining, rejected, errors)
        remaining = stages[name]["kept"]
    ledger = build_ledger(stages, remaining)
    ledger["stages"]["minhash_dedup"]["cluster_sizes"] = {"2": 2, "3": 1}
    top = [{"line": "Subscribe to our newsletter", "documents": 9},
           {"line": "All rights reserved.", "documents": 5},
           {"line": LONG_TEMPLATE_LINE, "documents": 3}]  # fmt: skip
    ledger["stages"]["template_lines"]["report"] = {"top_lines": top}
    curated.mkdir(parents=True)
    (curated / "run.json").write_text(json.dumps({"config_fingerprint": "f", "config": RUN_CONFIG}))
    n = remaining
    docs = pa.table({
        "id": [f"d{i}" for i in range(n)],
        "source": [("crawl/a.warc.gz", "text/b.jsonl")[i % 2] for i in range(n)],
        "url": [_url(i) for i in range(n)],
        "text": ["word " * int(rng.integers(20, 2000)) for _ in range(n)],
        "language": rng.choice(["en", "de", "fr"], n, p=[0.7, 0.2, 0.1]).tolist(),
        "language_score": rng.uniform(0.7, 1.0, n),
        "domain": [DOMAINS[i % 4] for i in range(n)],
        "quality_score": rng.uniform(0, 1, n),
    })  # fmt: skip
    (curated / "docs").mkdir()
    pq.write_table(docs.slice(0, 20), curated / "docs" / "shard-00000.parquet")
    pq.write_table(docs.slice(20), curated / "docs" / "shard-00001.parquet")
    rows = [
        {"stage": stage, "reason": reason, "cluster_id": None}
        for stage, entry in stages.items()
        for kind in ("rejected", "errors")
        for reason, count in entry[kind].items()
        for _ in range(count)
    ]
    for i, row in enumerate(rows):
        languages = REJECT_LANGUAGES.get(row["stage"], [None])
        seen = sum(r["stage"] == row["stage"] for r in rows[:i])
        row.update(id=f"r{i}", source=("crawl/a.warc.gz", "text/b.jsonl")[i % 2], url=_url(i),
                   language=languages[seen % len(languages)], snippet=f"rejected text {i} " * 40,
                   score=_score(row["reason"], i))  # fmt: skip
    for row, cluster in zip([r for r in rows if r["stage"] == "minhash_dedup"],
                            ["c1", "c2", "c3", "c3"], strict=True):  # fmt: skip
        row["cluster_id"] = cluster
    (curated / "rejects").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), curated / "rejects" / "documents-00000.parquet")
    # per language, as the runner counts it: kept documents, dropped ones by stage:reason
    languages: dict = {}
    for language in docs["language"].to_pylist():
        languages.setdefault(language or "und", {"kept": 0, "dropped": {}})["kept"] += 1
    for row in rows:
        dropped = languages.setdefault(row["language"] or "und", {"kept": 0, "dropped": {}})
        key = f"{row['stage']}:{row['reason']}"
        dropped["dropped"][key] = dropped["dropped"].get(key, 0) + 1
    ledger["languages"] = languages
    (curated / "funnel.txt").write_text(render_funnel(ledger))
    (curated / "ledger.json").write_text(json.dumps(ledger, sort_keys=True))  # as the runner
    return ledger


def _url(i: int) -> str | None:
    host = HOSTS[i % len(HOSTS)]
    return None if host is None else f"https://{host}/page-{i}"


def _score(reason: str, i: int) -> float | None:
    """What the stage would record: a probability, a word count, a similarity."""
    recorded = {
        "language_score_below_min": 0.3 + 0.01 * i,
        "gopher_too_few_words": float(10 + i),
        "c4_too_few_sentences": 2.0,
        "near_duplicate": 0.85 + 0.01 * (i % 3),
    }
    return recorded.get(reason)


def _write_tokenized(tokenized: Path, rng: np.random.Generator, n: int) -> None:
    lengths = rng.integers(5, 300, n)
    table = pa.table({
        "id": [f"d{i}" for i in range(n)],
        "domain": [DOMAINS[i % 4] for i in range(n)],
        "n_tokens": pa.array(lengths, pa.int32()),
        "tokens": pa.array([list(range(k)) for k in lengths], pa.list_(pa.uint32())),
    })  # fmt: skip
    (tokenized / "docs").mkdir(parents=True)
    pq.write_table(table, tokenized / "docs" / "shard-00000.parquet")
    pq.write_table(
        table.slice(0, 0), tokenized / "docs" / "shard-00001.parquet"
    )  # a shard can be empty


def _pack_rows(rng: np.random.Generator, seq_len: int, rows: int) -> pa.Table:
    records = []
    for r in range(rows):
        cu, domains, ids, offsets = [0], [], [], []
        while cu[-1] < seq_len - 8 and len(domains) < 6:
            length = int(min(rng.integers(4, seq_len // 2), seq_len - cu[-1]))
            cu.append(cu[-1] + length)
            domains.append(DOMAINS[int(rng.integers(0, 4))])
            ids.append(f"d{r}-{len(ids)}")
            offsets.append(0)
        tokens = list(range(cu[-1])) + [0] * (seq_len - cu[-1])
        records.append({"tokens": tokens, "cu_seqlens": cu, "doc_ids": ids, "domains": domains,
                        "doc_offsets": offsets, "n_tokens": cu[-1]})  # fmt: skip
    return pa.Table.from_pylist(records, schema=PACKED_SCHEMA)


def _write_phase(phase_dir: Path, name: str, seq_len: int, shares: list, rng) -> None:
    phase_dir.mkdir(parents=True)
    entries = [
        write_shard(phase_dir / f"shard-{i:05d}.arrow", _pack_rows(rng, seq_len, 12))
        for i in range(2)
    ]
    tokens = sum(e.tokens for e in entries)
    components = [
        ComponentShare(component, declared, realised, round(realised * tokens), docs, epochs)
        for component, declared, realised, docs, epochs in shares
    ]
    write_manifest(phase_dir, PhaseManifest(
        phase=name, seq_len=seq_len, rope_theta=1e6 if seq_len > 64 else 1e4, pad_id=0,
        eos_id=1, vocab_size=512, seed=0, shards=entries, components=components,
        domains=list(DOMAINS), padding_fraction=0.1234567, split_document_fraction=0.0456,
    ))  # fmt: skip


def _metrics(steps: int, rng: np.random.Generator) -> list[dict]:
    records, seen = [], 0
    for step in range(1, steps + 1):
        phase = "pretrain" if step <= steps // 2 else "long"
        seen += 500
        records.append({
            "step": step, "phase": phase, "phase_start": step in (1, steps // 2 + 1),
            "lr": 1e-3, "lm_loss": 6.0 - 0.2 * step, "tokens": 500, "tokens_seen": seen,
            "loss_by_domain": {d: 6.0 - 0.2 * step + i * 0.1 for i, d in enumerate(DOMAINS)}
            | {"books": None if step % 3 else 5.0},
            "balance_loss": 0.01, "z_loss": 1e-6, "grad_norm": 1.0 + rng.random(),
            "grad_norm_ratio": 0.05 if step % 2 else None, "router_cosine_sim": 0.1,
            "router_cosine_sim_per_layer": [0.1] * LAYERS,
            "ffn_experts_per_token": [1.5] * LAYERS, "zero_expert_share": [0.2] * LAYERS,
            "load_max_over_mean": [1.2, 1.4, 1.1],
            "ffn_experts_per_token_by_domain": {
                d: [round(1.0 + 0.1 * i + 0.05 * layer + 0.01 * step, 4) for layer in
                    range(LAYERS)] for i, d in enumerate(DOMAINS)},
            "bias_mu": 0.1, "step_time_s": 0.5, "target_ffn_experts": TARGET_FFN_EXPERTS,
        })  # fmt: skip
    return records
