"""``python -m bench.dedup``: the ``minhash_dedup`` step against brute-force truth and
against datatrove's MinHash dedup, on real text with known near duplicates.

Needs ``../shared/data`` (skips with a message otherwise). The corpus:

* real near duplicates: the three Gutenberg editions of Moby-Dick in
  ``neardup/gutenberg_editions``, cut into chapters (a chapter of one edition is a near
  duplicate of the same chapter in the others);
* other real documents: Pride and Prejudice chapters (``long/``), the STEM sources, the
  code files and the article bodies of the AEB web benchmark;
* planted variants of a quarter of those documents: word swaps, insertions, deletions
  and moved blocks until the word 5-gram Jaccard with the original reaches a target
  drawn from 0.65-0.97, so both sides of the 0.8 threshold are well populated.

Truth is brute force: the exact Jaccard of every pair of documents that shares a
shingle (an inverted index), components of the pairs at >= threshold, and every member
but the first (input order) removed. Precision and recall are of the removed documents.

Scale: the corpus is replicated 1x, 4x, 16x with every word of replica r suffixed
(``word`` -> ``wordq<r>``): replicas share no shingle, each keeps the near-duplicate
structure, so per-worker memory can be watched as the corpus grows.

datatrove (``pip install datatrove[processing] orjson spacy`` in a separate venv such
as /tmp/minhash-peers, never .venv; ``--peer-python``)
runs its four MinHash stages on the same documents, one task and one worker.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from stages.minhash import MinHashConfig, Signer, jaccard, shingle_hashes, shingle_set
from stages.minhash_lsh import union_find

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DOCS_PER_SHARD = 250
_WORD = re.compile(r"\w+")


def _chapters(path: Path, pattern: str) -> list[str]:
    text = path.read_text("utf-8", errors="replace")
    pieces = re.split(pattern, text, flags=re.MULTILINE)
    return [p.strip() for p in pieces if len(p.split()) >= 300]


def load_real(data: Path) -> list[tuple[str, str]]:
    docs: list[tuple[str, str]] = []
    for edition in sorted((data / "neardup" / "gutenberg_editions").glob("*.txt")):
        for i, text in enumerate(_chapters(edition, r"^CHAPTER \d+")):
            docs.append((f"moby/{edition.stem}/{i}", text))
    for i, text in enumerate(_chapters(data / "long" / "1342-0.txt", r"^Chapter \d+")):
        docs.append((f"pride/{i}", text))
    for folder in ("stem", "code"):
        for path in sorted((data / folder).rglob("*")):
            if path.is_file() and path.stat().st_size > 500:
                docs.append(
                    (
                        f"{folder}/{path.relative_to(data / folder)}",
                        path.read_text("utf-8", errors="replace"),
                    )
                )
    truth = json.loads((data / "web" / "aeb" / "ground-truth.json").read_text())
    for key in sorted(truth):
        body = truth[key].get("articleBody") or ""
        if len(body.split()) >= 50:
            docs.append((f"aeb/{key[:16]}", body))
    return docs


def _variant(text: str, target: float, rng: random.Random, cfg: MinHashConfig) -> str:
    words = text.split()
    original = _set(text, cfg)
    step = max(1, len(words) // 200)
    while len(words) > 20:
        for _ in range(step):
            kind = rng.random()
            at = rng.randrange(len(words))
            if kind < 0.5:
                words[at] = rng.choice(words)
            elif kind < 0.75:
                words.insert(at, rng.choice(words))
            elif kind < 0.95:
                del words[at]
            else:
                block = words[at : at + 15]
                del words[at : at + 15]
                spot = rng.randrange(len(words) + 1)
                words[spot:spot] = block
        candidate = " ".join(words)
        if jaccard(original, _set(candidate, cfg)) <= target:
            return candidate
    return " ".join(words)


def _set(text: str, cfg: MinHashConfig) -> np.ndarray:
    hashes, offsets = shingle_hashes([text], cfg)
    return shingle_set(hashes[offsets[0] : offsets[1]])


def build_corpus(data: Path, cfg: MinHashConfig, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    real = load_real(data)
    planted = []
    for name, text in rng.sample(real, len(real) // 4):
        planted.append((f"{name}#variant", _variant(text, rng.uniform(0.65, 0.97), rng, cfg)))
    corpus = real + planted
    rng.shuffle(corpus)
    return corpus


def replicate(corpus: list[tuple[str, str]], copies: int) -> list[tuple[str, str]]:
    out = list(corpus)
    for r in range(1, copies):
        out += [(f"{n}@{r}", _WORD.sub(lambda m: f"{m.group(0)}q{r}", t)) for n, t in corpus]  # noqa: B023
    return out


def brute_force_removed(corpus: list[tuple[str, str]], cfg: MinHashConfig) -> set[str]:
    """Exact Jaccard of every pair sharing a shingle; removed = all but the first of
    each component of pairs at >= threshold."""
    hashes, offsets = shingle_hashes([t for _, t in corpus], cfg)
    sets = [shingle_set(hashes[offsets[i] : offsets[i + 1]]) for i in range(len(corpus))]
    values = np.concatenate(sets)
    owners = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    order = np.argsort(values, kind="stable")
    values, owners = values[order], owners[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    sizes = np.diff(np.r_[starts, len(values)])
    pairs = set()
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
        members = owners[start : start + size].tolist()
        pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
    src, dst = [], []
    for a, b in pairs:
        if jaccard(sets[a], sets[b]) >= cfg.threshold:
            src.append(a)
            dst.append(b)
    if not src:
        return set()
    nodes, components = union_find(np.array(src, np.int64), np.array(dst, np.int64))
    return {
        corpus[n][0] for n, c in zip(nodes.tolist(), components.tolist(), strict=True) if n != c
    }


class MemoryWatch:
    """Samples every Ray worker's RSS (minus shared memory: the object store's pages)
    and keeps each process's peak; VmHWM is reported too."""

    def __init__(self) -> None:
        self.private: dict[int, int] = {}
        self.hwm: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    self._sample(int(pid))

    def _sample(self, pid: int) -> None:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if not cmd.startswith(b"ray::"):
                return
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            )
        except (OSError, ValueError):
            return
        kib = {k: int(v.split()[0]) for k, v in fields.items() if v.strip().endswith("kB")}
        private = kib.get("VmRSS", 0) - kib.get("RssShmem", 0)
        self.private[pid] = max(self.private.get(pid, 0), private)
        self.hwm[pid] = max(self.hwm.get(pid, 0), kib.get("VmHWM", 0))


def run_ours(corpus: list[tuple[str, str]], cfg: MinHashConfig, cpus: int) -> dict:
    import ray

    from pipeline.curate import RunLayout
    from pipeline.minhash_wiring import STEP, decide_near_duplicates
    from pipeline.shards import (
        Shard,
        read_json,
        read_parquet,
        write_json_atomic,
        write_parquet_atomic,
    )
    from stages.duplicates import DROPS_SCHEMA

    root = tempfile.mkdtemp(prefix="bench-dedup-")
    layout = RunLayout.for_output(root)
    shards = []
    for index, start in enumerate(range(0, len(corpus), DOCS_PER_SHARD)):
        chunk = corpus[start : start + DOCS_PER_SHARD]
        table = pa.table(
            {
                "id": [n for n, _ in chunk],
                "shard": pa.array([index] * len(chunk), pa.int32()),
                "ordinal": pa.array(range(len(chunk)), pa.int64()),
                "text": [t for _, t in chunk],
            }
        )
        write_parquet_atomic(layout.filesystem, layout.work_documents(index), table)
        write_json_atomic(
            layout.filesystem, layout.work_stats(index), {"documents": {"rows": len(chunk)}}
        )
        shards.append(Shard(index=index, input_index=0, files=()))
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    with MemoryWatch() as watch:
        started = time.perf_counter()
        decide_near_duplicates(layout, shards, [], [], "bench", cfg)
        seconds = time.perf_counter() - started
    drops = pa.concat_tables(
        [
            read_parquet(layout.filesystem, layout.decision(STEP, "bench", s.index), DROPS_SCHEMA)
            for s in shards
        ]
    )
    report = read_json(layout.filesystem, f"{layout.decision_dir(STEP, 'bench')}/_SUCCESS")
    shutil.rmtree(root, ignore_errors=True)
    return {
        "removed": set(drops.column("id").to_pylist()),
        "seconds": seconds,
        "docs_per_s_per_core": len(corpus) / seconds / cpus,
        "worker_peak_private_mib": max(watch.private.values(), default=0) / 1024,
        "worker_peak_hwm_mib": max(watch.hwm.values(), default=0) / 1024,
        "report": report["report"],
    }


DATATROVE_SCRIPT = r"""
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets,
    MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
work = sys.argv[1]
cfg = MinhashConfig()
def run(pipeline, tasks=1):
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1,
                          logging_dir=f"{work}/logs/{time.time()}").run()
start = time.perf_counter()
run([JsonlReader(f"{work}/in"), MinhashDedupSignature(f"{work}/sigs", config=cfg)])
run([MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=cfg)], cfg.num_buckets)
run([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=cfg)])
run([JsonlReader(f"{work}/in"), MinhashDedupFilter(f"{work}/remove",
     exclusion_writer=JsonlWriter(f"{work}/removed", compression=None))])
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def run_datatrove(corpus: list[tuple[str, str]], peer_python: str) -> dict | None:
    work = Path(tempfile.mkdtemp(prefix="bench-datatrove-"))
    (work / "in").mkdir()
    with open(work / "in" / "docs.jsonl", "w") as handle:
        for name, text in corpus:
            handle.write(json.dumps({"id": name, "text": text}) + "\n")
    (work / "run.py").write_text(DATATROVE_SCRIPT)
    result = subprocess.run(
        [peer_python, str(work / "run.py"), str(work)], capture_output=True, text=True, timeout=3600
    )
    if result.returncode != 0:
        print(f"datatrove failed: {result.stderr[-1500:]}", file=sys.stderr)
        return None
    seconds = json.loads(result.stdout.strip().splitlines()[-1])["seconds"]
    removed = set()
    for path in (work / "removed").glob("*.jsonl"):
        removed |= {json.loads(line)["id"] for line in path.read_text().splitlines()}
    shutil.rmtree(work, ignore_errors=True)
    return {"removed": removed, "seconds": seconds, "docs_per_s_per_core": len(corpus) / seconds}


def accuracy(removed: set[str], truth: set[str]) -> tuple[float, float]:
    hits = len(removed & truth)
    return hits / max(1, len(removed)), hits / max(1, len(truth))


def signature_speed(corpus: list[tuple[str, str]], cfg: MinHashConfig) -> float:
    """Shingles + signatures + band keys in one process: documents per second."""
    signer = Signer(cfg)
    texts = [t for _, t in corpus]
    started = time.perf_counter()
    for start in range(0, len(texts), DOCS_PER_SHARD):
        hashes, offsets = shingle_hashes(texts[start : start + DOCS_PER_SHARD], cfg)
        signer.band_keys(signer.signatures(hashes, offsets))
    return len(texts) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dedup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--scales", default="1,4,16", help="corpus copies for the memory runs")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument(
        "--peer-python",
        default=os.environ.get("DATATROVE_PYTHON"),
        help="a python with datatrove[processing] installed",
    )
    parser.add_argument("--peer-scale", type=int, default=4, help="scale datatrove runs at")
    parser.add_argument("--no-verify", action="store_true", help="also run without verification")
    args = parser.parse_args(argv)
    if not (args.data / "neardup").is_dir():
        print(f"skipped: {args.data} not found (the shared real-data folder)")
        return 0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("PIPELINE_PROGRESS", "0")
    cfg = MinHashConfig()
    corpus = build_corpus(args.data, cfg)
    words = sum(len(t.split()) for _, t in corpus)
    print(f"corpus: {len(corpus)} documents, {words / len(corpus):.0f} words each on average")
    truth = brute_force_removed(corpus, cfg)
    print(f"truth (brute force, Jaccard >= {cfg.threshold}): {len(truth)} documents to remove")
    print(f"signatures alone (1 process): {signature_speed(corpus, cfg):.0f} docs/s")
    results = {}
    variants = [("ours", cfg)] + (
        [("ours, no verification", MinHashConfig(verify_candidates=False))]
        if args.no_verify
        else []
    )
    for label, settings in variants:
        ours = run_ours(corpus, settings, args.cpus)
        precision, recall = accuracy(ours["removed"], truth)
        results[label] = {**ours, "precision": precision, "recall": recall}
        print(
            f"{label}: bands x rows {settings.band_layout()}, precision {precision:.4f}, "
            f"recall {recall:.4f}, {ours['docs_per_s_per_core']:.0f} docs/s/core "
            f"({ours['seconds']:.1f} s on {args.cpus} CPUs), report {ours['report']}"
        )
    runs = {}
    for copies in [int(s) for s in args.scales.split(",") if s]:
        scaled = replicate(corpus, copies)
        scaled_truth = {n if r == 0 else f"{n}@{r}" for n in truth for r in range(copies)}
        run = run_ours(scaled, cfg, args.cpus)
        precision, recall = accuracy(run["removed"], scaled_truth)
        runs[copies] = (scaled, scaled_truth, run)
        print(
            f"scale {copies:>2}x: {len(scaled)} docs, {run['seconds']:.1f} s, "
            f"{run['docs_per_s_per_core']:.0f} docs/s/core, precision {precision:.4f}, "
            f"recall {recall:.4f}, peak worker memory {run['worker_peak_private_mib']:.0f} MiB "
            f"private ({run['worker_peak_hwm_mib']:.0f} MiB VmHWM), "
            f"partitions {run['report']['partitions']}"
        )
    if not args.peer_python:
        print("datatrove: skipped (pass --peer-python PATH to a python with datatrove)")
    elif args.peer_scale in runs:
        scaled, scaled_truth, ours = runs[args.peer_scale]
        peer = run_datatrove(scaled, args.peer_python)
        if peer is not None:
            ours_precision, ours_recall = accuracy(ours["removed"], scaled_truth)
            precision, recall = accuracy(peer["removed"], scaled_truth)
            print(
                f"datatrove at {args.peer_scale}x: precision {precision:.4f}, recall {recall:.4f}"
                f", {peer['docs_per_s_per_core']:.1f} docs/s/core ({peer['seconds']:.1f} s)"
            )
            print(
                f"ratios ours/datatrove at {args.peer_scale}x: throughput per core "
                f"{ours['docs_per_s_per_core'] / peer['docs_per_s_per_core']:.1f}x, "
                f"precision {ours_precision / max(precision, 1e-9):.3f}, "
                f"recall {ours_recall / max(recall, 1e-9):.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
