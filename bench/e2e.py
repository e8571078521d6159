"""End-to-end curation, ours against datatrove, on one corpus (``bench.corpus``).

Both pipelines run the same steps with the same settings on the same files:

    read (WARC / JSONL) -> trafilatura (favor precision, 5 s limit, no dedup inside)
    -> language id (lid.176.ftz, the model we ship; English, score >= 0.65)
    -> Gopher repetition -> Gopher quality (the papers' thresholds, both sides' defaults)
    -> MinHash near-duplicate removal -> tokenize (the same tokenizer.json, eos appended)

Ours runs as ``run_curate`` + ``run_tokenize`` with ``num_cpus`` 1 or 2, in a driver
process of its own: at 2 on an embedded Ray (its start-up is timed apart), at 1 in that
process without Ray (``ray.executor: auto``, the default for an embedded one-CPU run);
datatrove runs its
``LocalPipelineExecutor`` with one task and one worker in its own venv (``bench.peers``).
Each side's per-document fate (which step dropped it, and why) is read back from its
outputs, matched on the document URL, and compared:

* heuristic survivors: Jaccard of the URL sets that passed the Gopher filters;
* per rule: documents both sides fed to the filters where one side dropped with that
  rule and the other kept;
* near-duplicate clusters: precision and recall of our same-cluster pairs against
  datatrove's, over the documents both fed to MinHash.

Peak memory is the largest sum, sampled every 0.2 s, of the private resident memory
(VmRSS - RssShmem: Ray's object store pages are shared) of the driver and every process
under it (raylet, GCS, workers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.corpus import Corpus
from bench.processes import descendants

LID_MODEL = Path(__file__).resolve().parents[1] / "stages" / "resources" / "lid.176.ftz"
EOS = "<|endoftext|>"
LANGUAGES = ["en"]
MIN_LANGUAGE_SCORE = 0.65
HEURISTIC_PRESETS = ["gopher_repetition", "gopher_quality"]  # datatrove's order
SHARD_INPUT_BYTES = 1_000_000
SUMMARY = (
    "Read WARC/JSONL, trafilatura, lid.176 (English, score >= 0.65), Gopher repetition and"
    " quality (the papers' thresholds), MinHash near-duplicate removal, tokenize with the"
    " same tokenizer.json: ours (2 workers on an embedded Ray; 1 worker in-process, the"
    " one-CPU default) against datatrove's LocalPipelineExecutor (1 task, 1 worker), the"
    " same files in."
)


def bench_tokenizer(data: Path, corpus: Corpus, work: Path) -> tuple[Path, str]:
    """The GPT-NeoX ``tokenizer.json`` of the shared data; without it, a 4096-token
    byte-level BPE trained here on the corpus's texts (both sides use the same file)."""
    shared = data / "tokenizers" / "gpt-neox.json"
    if shared.is_file():
        return shared, "GPT-NeoX BPE (shared data)"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = []
    for path in sorted(corpus.text_dir.glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text("utf-8").splitlines()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=[EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts or ["no text"], trainer)
    path = work / "tokenizer.json"
    tokenizer.save(str(path))
    return path, "no shared GPT-NeoX tokenizer: a 4096-token BPE trained on the corpus"


# ---------------------------------------------------------------- memory


def _private_kib(pid: int) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    kib = {k: int(v.split()[0]) for k, v in fields.items() if v.strip().endswith("kB")}
    return kib.get("VmRSS", 0) - kib.get("RssShmem", 0)


class TreeMemory:
    """Peak of the summed private RSS of a process and all its descendants (Linux)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not Path("/proc").is_dir():
                return
            total = sum(_private_kib(pid) for pid in descendants(self.pid))
            self.peak_kib = max(self.peak_kib, total)

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def _run_measured(
    command: list[str], timeout: float, env: dict[str, str], stdout: Path | None = None
) -> tuple[int, str, float]:
    """Run ``command`` (stdout to ``stdout`` or discarded); return its exit status, the
    tail of its stderr and the peak memory of its process tree (MiB)."""
    with tempfile.TemporaryFile("w+") as errors, open(stdout or os.devnull, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=errors, env=env)
        with TreeMemory(process.pid) as memory:
            try:
                status = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                status = -9
        errors.seek(0)
        tail = errors.read()[-3000:]
    return status, tail, memory.peak_mib


# ---------------------------------------------------------------- ours


def write_our_configs(corpus: Corpus, work: Path, cpus: int, tokenizer: Path) -> tuple[Path, Path]:
    """The curate and tokenize YAML files of our side (the CLI's own config format)."""
    work.mkdir(parents=True, exist_ok=True)
    curate = {
        "inputs": [
            {"path": str(corpus.warc_dir), "name": "web"},
            {"path": str(corpus.text_dir), "name": "text"},
        ],
        "output_dir": str(work / "curated"),
        "shard_input_bytes": SHARD_INPUT_BYTES,
        "reader": {"text_field": "text", "url_field": "url"},
        "stages": {
            "extract": {"favor_precision": True, "timeout_seconds": 5.0},
            "langid": {"languages": LANGUAGES, "min_score": MIN_LANGUAGE_SCORE},
            "heuristics": {"presets": HEURISTIC_PRESETS},
            "domain": None,
            "exact_dedup": None,
            "minhash_dedup": {},
        },
        "ray": {"num_cpus": cpus},
    }
    tokenize = {
        "curated_dir": str(work / "curated"),
        "output_dir": str(work / "tokenized"),
        "tokenizer": {"tokenizer_path": str(tokenizer), "eos_token": EOS},
        "ray": {"num_cpus": cpus},
    }
    (work / "curate.yaml").write_text(yaml.safe_dump(curate, sort_keys=False))
    (work / "tokenize.yaml").write_text(yaml.safe_dump(tokenize, sort_keys=False))
    return work / "curate.yaml", work / "tokenize.yaml"


def _ours_driver(curate_yaml: Path, tokenize_yaml: Path, result: Path) -> int:
    """Inside the driver subprocess: start Ray, then time curate and tokenize."""
    os.environ.setdefault("PIPELINE_PROGRESS", "0")
    from pipeline.config import load_curate_config
    from pipeline.runner import init_ray, run_curate
    from pipeline.token_runner import run_tokenize
    from pipeline.tokenizing import load_tokenize_config

    curate = load_curate_config(curate_yaml)
    tokenize = load_tokenize_config(tokenize_yaml)
    started = time.perf_counter()
    init_ray(None, curate.ray.num_cpus)
    ray_started = time.perf_counter()
    curated = run_curate(curate, overwrite=True)
    curated_at = time.perf_counter()
    tokenized = run_tokenize(tokenize)
    done = time.perf_counter()
    body = {
        "ray_start_s": ray_started - started,
        "curate_s": curated_at - ray_started,
        "tokenize_s": done - curated_at,
        "documents_written": curated.ledger["documents_written"],
        "tokens": tokenized.manifest["tokens"],
    }
    result.write_text(json.dumps(body))
    return 0


@dataclass
class Fates:
    """Per URL: the step that dropped it (``read``, ``extract``, ``langid``,
    ``heuristics``, ``minhash``) or ``kept``; the reason of heuristic drops; near-duplicate
    clusters as lists of URLs (each with more than one member)."""

    step: dict[str, str] = field(default_factory=dict)
    reason: dict[str, str] = field(default_factory=dict)
    clusters: list[list[str]] = field(default_factory=list)

    def passed_heuristics(self) -> set[str]:
        return {u for u, s in self.step.items() if s in ("kept", "minhash")}

    def entered_heuristics(self) -> set[str]:
        return {u for u, s in self.step.items() if s in ("kept", "minhash", "heuristics")}


_OUR_STEPS = {"extract": "extract", "langid": "langid", "heuristics": "heuristics",
              "minhash_dedup": "minhash"}  # fmt: skip


def our_fates(curated: Path) -> Fates:
    import pyarrow.parquet as pq

    fates = Fates()
    ids: dict[str, str] = {}
    for path in sorted((curated / "docs").glob("*.parquet")):
        table = pq.read_table(path, columns=["id", "url"])
        for doc_id, url in zip(*(table.column(c).to_pylist() for c in ("id", "url")), strict=True):
            fates.step[url], ids[doc_id] = "kept", url
    edges = []
    for path in sorted((curated / "rejects").glob("*.parquet")):
        table = pq.read_table(path, columns=["id", "url", "stage", "reason", "duplicate_of"])
        for item in table.to_pylist():
            url = item["url"]
            if url is None:
                continue
            fates.step[url] = _OUR_STEPS.get(item["stage"], "read")
            ids[item["id"]] = url
            if item["stage"] == "heuristics":
                fates.reason[url] = item["reason"]
            if item["stage"] == "minhash_dedup" and item["duplicate_of"]:
                edges.append((item["id"], item["duplicate_of"]))
    fates.clusters = _components([(ids.get(a), ids.get(b)) for a, b in edges])
    return fates


def _components(edges: list[tuple[str | None, str | None]]) -> list[list[str]]:
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        if a is not None and b is not None:
            parent[root(a)] = root(b)
    groups: dict[str, list[str]] = {}
    for node in list(parent):
        groups.setdefault(root(node), []).append(node)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def run_ours(
    corpus: Corpus, work: Path, cpus: int, tokenizer: Path, timeout: float = 1800
) -> dict[str, Any]:
    """Our curate + tokenize in a driver subprocess; times, peak memory and fates."""
    curate_yaml, tokenize_yaml = write_our_configs(corpus, work, cpus, tokenizer)
    result = work / "result.json"
    command = [sys.executable, "-m", "bench.e2e", "ours", str(curate_yaml),
               str(tokenize_yaml), str(result)]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PIPELINE_PROGRESS": "0"}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    status, errors, peak = _run_measured(command, timeout, env)
    if status != 0 or not result.is_file():
        return {"error": f"our pipeline exited with {status}: {errors.strip()[-600:]}"}
    body = json.loads(result.read_text())
    seconds = body["curate_s"] + body["tokenize_s"]
    return {
        **body,
        "seconds": seconds,
        "cpus": cpus,
        "docs_per_s_per_core": corpus.documents / seconds / cpus,
        "peak_memory_mib": peak,
        "fates": our_fates(work / "curated"),
    }


# ---------------------------------------------------------------- datatrove

DATATROVE_SCRIPT = r"""
import json, shutil, sys, time
from pathlib import Path

import datatrove.utils.lid as lid
args = json.loads(sys.argv[1])
lid.cached_asset_path_or_download = lambda *a, **k: args["lid_model"]  # our shipped model

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets,
    MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import (GopherQualityFilter, GopherRepetitionFilter,
    LanguageFilter)
from datatrove.pipeline.readers import JsonlReader, WarcReader
from datatrove.pipeline.tokens import DocumentTokenizer
from datatrove.pipeline.writers import JsonlWriter

work = Path(args["work"])
def writer(name):
    return JsonlWriter(str(work / name), compression=None)
def run(pipeline, tasks=1):
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1,
                          logging_dir=str(work / "logs" / str(time.time()))).run()

(work / "extracted").mkdir(parents=True, exist_ok=True)
for path in Path(args["text_dir"]).glob("*.jsonl"):  # texts skip extraction
    shutil.copy(path, work / "extracted" / ("text-" + path.name))
cfg = MinhashConfig()
times = {}
start = time.perf_counter()
run([WarcReader(args["warc_dir"], glob_pattern="*.warc.gz"),
     Trafilatura(favour_precision=True, timeout=5.0, deduplicate=False),
     JsonlWriter(str(work / "extracted"), output_filename="web-${rank}.jsonl", compression=None)])
times["extract"] = time.perf_counter() - start
run([JsonlReader(str(work / "extracted")),
     LanguageFilter(languages=args["languages"], language_threshold=args["min_score"],
                    exclusion_writer=writer("excluded_langid")),
     GopherRepetitionFilter(exclusion_writer=writer("excluded_gopher_repetition")),
     GopherQualityFilter(exclusion_writer=writer("excluded_gopher_quality")),
     writer("filtered"),
     MinhashDedupSignature(str(work / "signatures"), config=cfg)])
times["filters_signatures"] = time.perf_counter() - start - sum(times.values())
run([MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"), config=cfg)],
    cfg.num_buckets)
run([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg,
                         save_cluster_id=True)])
run([JsonlReader(str(work / "filtered")),
     MinhashDedupFilter(str(work / "remove"), exclusion_writer=writer("removed"),
                        load_cluster_ids=True),
     writer("deduped")])
times["minhash"] = time.perf_counter() - start - sum(times.values())
run([JsonlReader(str(work / "deduped")),
     DocumentTokenizer(str(work / "tokenized"), tokenizer_name_or_path=args["tokenizer"],
                       eos_token=args["eos"], save_filename="tokens")])
times["tokenize"] = time.perf_counter() - start - sum(times.values())
print(json.dumps({"seconds": time.perf_counter() - start, "steps": times}))
"""


def _jsonl_docs(folder: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            docs.extend(json.loads(line) for line in handle if line.strip())
    return docs


def _url(doc: dict[str, Any]) -> str | None:
    return (doc.get("metadata") or {}).get("url") or doc.get("url")


def datatrove_fates(work: Path, corpus: Corpus) -> Fates:
    fates = Fates()
    for url in corpus.urls:
        fates.step[url] = "extract"  # absent from the extracted folder: the extractor dropped it
    for doc in _jsonl_docs(work / "extracted"):
        fates.step[_url(doc)] = "lost"  # reached the filters: a later folder says where it went
    for folder, step in (
        ("excluded_langid", "langid"),
        ("excluded_gopher_repetition", "heuristics"),
        ("excluded_gopher_quality", "heuristics"),
        ("removed", "minhash"),
        ("deduped", "kept"),
    ):
        for doc in _jsonl_docs(work / folder):
            url = _url(doc)
            fates.step[url] = step
            if step == "heuristics":
                fates.reason[url] = doc["metadata"].get("filter_reason", folder)
    clusters: dict[int, list[str]] = {}
    for folder in ("removed", "deduped"):
        for doc in _jsonl_docs(work / folder):
            cluster = doc["metadata"].get("minhash_cluster_id", -1)
            if cluster is not None and cluster >= 0:
                clusters.setdefault(cluster, []).append(_url(doc))
    fates.clusters = [sorted(c) for c in clusters.values() if len(c) > 1]
    return fates


def run_datatrove(
    corpus: Corpus, work: Path, python: Path, tokenizer: Path, timeout: float = 1800
) -> dict[str, Any]:
    """datatrove's pipeline in its venv; times, peak memory and fates."""
    work.mkdir(parents=True, exist_ok=True)
    script = work / "datatrove_pipeline.py"
    script.write_text(DATATROVE_SCRIPT)
    args = {
        "work": str(work), "warc_dir": str(corpus.warc_dir), "text_dir": str(corpus.text_dir),
        "lid_model": str(LID_MODEL), "languages": LANGUAGES, "min_score": MIN_LANGUAGE_SCORE,
        "tokenizer": str(tokenizer), "eos": EOS,
    }  # fmt: skip
    output = work / "stdout.json"
    command = [str(python), str(script), json.dumps(args)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DATATROVE_COLORIZE_LOGS": "0"}
    status, errors, peak = _run_measured(command, timeout, env, stdout=output)
    lines = output.read_text().strip().splitlines() if output.is_file() else []
    if status != 0 or not lines:
        return {"error": f"datatrove exited with {status}: {errors.strip()[-600:]}"}
    body = json.loads(lines[-1])
    read = _reader_documents(work / "logs")
    tokens = 0
    for meta in (work / "tokenized").glob("*.metadata"):
        first = meta.read_text().split("\n", 2)
        tokens += int(first[1]) if len(first) > 1 and first[1].strip().isdigit() else 0
    return {
        **body,
        "cpus": 1,
        "docs_per_s_per_core": corpus.documents / body["seconds"],
        "peak_memory_mib": peak,
        "tokens": tokens or None,
        "warc_records_read": read,
        "fates": datatrove_fates(work, corpus),
    }


def _reader_documents(logs: Path) -> int | None:
    """Documents datatrove's WarcReader yielded (from its first run's stats.json)."""
    for stats in sorted(logs.glob("*/stats.json"), key=lambda p: float(p.parent.name)):
        for step in json.loads(stats.read_text()):
            if "Warc" in step.get("name", ""):
                return step.get("stats", {}).get("documents", {}).get("total")
    return None


# ---------------------------------------------------------------- agreement


def _pairs(clusters: list[list[str]], allowed: set[str]) -> set[tuple[str, str]]:
    pairs = set()
    for cluster in clusters:
        members = sorted(u for u in cluster if u in allowed)
        pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
    return pairs


def agreement(ours: Fates, peer: Fates) -> dict[str, Any]:
    """How far the two pipelines agree, on the documents both saw at each point."""
    ours_pass, peer_pass = ours.passed_heuristics(), peer.passed_heuristics()
    union = ours_pass | peer_pass
    both_entered = ours.entered_heuristics() & peer.entered_heuristics()
    only_ours_drop = Counter(
        ours.reason[u] for u in both_entered if u in ours.reason and u in peer_pass
    )
    only_peer_drop = Counter(
        peer.reason[u] for u in both_entered if u in peer.reason and u in ours_pass
    )
    agree = sum((u in ours_pass) == (u in peer_pass) for u in both_entered)
    common = ours_pass & peer_pass
    ours_pairs, peer_pairs = _pairs(ours.clusters, common), _pairs(peer.clusters, common)
    shared = len(ours_pairs & peer_pairs)
    return {
        "survivors_ours": len(ours_pass),
        "survivors_peer": len(peer_pass),
        "survivors_jaccard": len(ours_pass & peer_pass) / len(union) if union else 1.0,
        "entered_heuristics_both": len(both_entered),
        "heuristic_decision_agreement": agree / len(both_entered) if both_entered else None,
        "dropped_only_by_ours": dict(only_ours_drop.most_common()),
        "dropped_only_by_peer": dict(only_peer_drop.most_common()),
        "near_dup_pairs_ours": len(ours_pairs),
        "near_dup_pairs_peer": len(peer_pairs),
        "near_dup_pair_precision": shared / len(ours_pairs) if ours_pairs else None,
        "near_dup_pair_recall": shared / len(peer_pairs) if peer_pairs else None,
        "steps_ours": dict(Counter(ours.step.values())),
        "steps_peer": dict(Counter(peer.step.values())),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.e2e ours CURATE.yaml TOKENIZE.yaml RESULT.json``: the driver
    that ``run_ours`` starts (not meant to be called by hand)."""
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    parser.add_argument("role", choices=["ours"])
    parser.add_argument("curate_yaml", type=Path)
    parser.add_argument("tokenize_yaml", type=Path)
    parser.add_argument("result", type=Path)
    args = parser.parse_args(argv)
    return _ours_driver(args.curate_yaml, args.tokenize_yaml, args.result)


if __name__ == "__main__":
    raise SystemExit(main())
