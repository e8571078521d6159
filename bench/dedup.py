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
(``word`` -> ``wordqb`` for r = 1, letters only): replicas share no shingle, each keeps
the near-duplicate structure, so per-worker memory can be watched as the corpus grows.

Both signature backends (rensa, datasketch) run the whole step on the 1x corpus; the
default one runs every scale. Each run starts a fresh embedded Ray, and reports wall
time, the CPU time of every process of the step, and each Ray worker's peak private
memory (``ProcessWatch``).

datatrove runs its four MinHash stages on the same documents, one task and one worker,
in its own venv (``bench.peers``: ``$DATATROVE_PYTHON`` or the bench cache's venv;
``--install-peer`` creates it with pip; ``--peer-python`` names another).

``--quick``: the first 300 documents of the corpus, scales 1x and 2x, datatrove at 1x.
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

from bench.contract import Row, add_contract_arguments, row, write_json
from bench.processes import descendants
from stages.minhash import MinHashConfig, Signer, jaccard, shingle_hashes, shingle_set
from stages.minhash_lsh import union_find

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DOCS_PER_SHARD = 250  # documents per batch in the one-process signing measure
SHARD_TEXT_BYTES = 4 << 20  # a pass-1 shard's text: shards are planned by bytes in a run
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
    """The corpus ``copies`` times; copy r's words carry a letters-only suffix (``q`` and
    r's digits as letters: datatrove's normalisation maps digits to 0, which would make
    the copies identical for it)."""
    out = list(corpus)
    for r in range(1, copies):
        tag = "q" + "".join(chr(ord("a") + int(digit)) for digit in str(r))
        out += [(f"{n}@{r}", _WORD.sub(lambda m: m.group(0) + tag, t)) for n, t in corpus]  # noqa: B023
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


class ProcessWatch:
    """Per-process peaks and CPU time of this driver and every process under it (the
    embedded Ray: raylet, GCS, workers), sampled every 0.1 s from ``/proc``.

    Peak memory is *private* RSS (``VmRSS - RssShmem``): a Ray worker maps the object
    store's shared pages, which ``VmRSS`` and ``VmHWM`` would count against every
    worker that reads an object. Workers are ``ray::`` processes; the driver is
    reported apart, as its growth during the step (the bench itself holds the corpus).

    CPU time is user + system per process: the last value seen minus the value at the
    start (zero for a process started during the step), summed, less this sampler's
    own. Reaped children's counters are not used: Ray reaps idle workers in ways that
    do not always add them to a parent's. A process that exits loses at most its last
    0.1 s. On a shared machine this is the measure other processes' load inflates
    least; wall time is reported beside it."""

    def __init__(self) -> None:
        self.worker_peak: dict[int, int] = {}
        self.worker_hwm: dict[int, int] = {}
        self.worker_peak_task: dict[int, str] = {}  # what the worker ran at its peak
        self.driver_peak = 0
        self.driver_start = 0
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._sampler_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ticks = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> ProcessWatch:
        self._cpu_start = {pid: cpu for pid, cpu in self._cpu_of_tree().items()}
        self._cpu_last = dict(self._cpu_start)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._cpu_last |= self._cpu_of_tree()
        used = sum(cpu - self._cpu_start.get(pid, 0.0) for pid, cpu in self._cpu_last.items())
        self.cpu_seconds = used - self._sampler_cpu

    def _cpu_of_tree(self) -> dict[int, float]:
        cpu = {}
        for pid in descendants(os.getpid()):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu[pid] = (int(fields[11]) + int(fields[12])) / self._ticks  # utime + stime
        return cpu

    def _run(self) -> None:
        started = time.thread_time()
        while not self._stop.wait(0.1):
            cpu = self._cpu_of_tree()
            self._cpu_last |= cpu
            for pid in cpu:
                self._sample(pid)
        self._sampler_cpu = time.thread_time() - started

    def _sample(self, pid: int) -> None:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            return
        kib = {}
        for line in lines:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                kib[key] = int(value.split()[0])
        private = kib.get("VmRSS", 0) - kib.get("RssShmem", 0)
        if pid == os.getpid():
            self.driver_start = self.driver_start or private
            self.driver_peak = max(self.driver_peak, private)
        elif cmd.startswith(b"ray::"):
            if private > self.worker_peak.get(pid, 0):
                self.worker_peak_task[pid] = cmd.split(b"\0")[0].decode(errors="replace")
            self.worker_peak[pid] = max(self.worker_peak.get(pid, 0), private)
            self.worker_hwm[pid] = max(self.worker_hwm.get(pid, 0), kib.get("VmHWM", 0))


def write_shards(corpus: list[tuple[str, str]], root: str, per_shard: int | None = None) -> tuple:
    """Pass-1 outputs as a run leaves them: documents and stats per shard. Shards hold
    about ``SHARD_TEXT_BYTES`` of text, as a run plans them by input bytes (the suffixed
    words of later replicas are longer: a fixed document count would make the larger
    corpora's shards bigger); ``per_shard`` documents instead when given."""
    from pipeline.curate import RunLayout
    from pipeline.shards import Shard, write_json_atomic, write_parquet_atomic

    layout = RunLayout.for_output(root)
    shards = []
    for index, chunk in enumerate(_shard_chunks(corpus, per_shard)):
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
        shards.append(Shard(index=index, input_index=0, pieces=()))
    return layout, shards


def _shard_chunks(corpus: list[tuple[str, str]], per_shard: int | None):
    chunk: list[tuple[str, str]] = []
    size = 0
    for name, text in corpus:
        chunk.append((name, text))
        size += len(text.encode())
        if (len(chunk) == per_shard) if per_shard else size >= SHARD_TEXT_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


WARM_UP_SHARDS = 8  # 2 CPUs / 0.5 per map task: every worker the step will use starts


def run_ours(
    corpus: list[tuple[str, str]], cfg: MinHashConfig, cpus: int, fresh_ray: bool = True
) -> dict:
    """The whole decision step, timed from the call to the ``_SUCCESS``. With
    ``fresh_ray`` (not ``--quick``) each run gets its own embedded Ray, so each worker's
    peak is this run's. A warm-up decision on the first ``WARM_UP_DOCS`` documents comes
    first on a new Ray (``WARM_UP_SHARDS`` shards of 20 documents): in a curate run the
    step finds Ray and its workers started by pass 1, so their start (about a CPU-second
    and 300 MiB a worker) is not its cost."""
    import ray

    from pipeline.minhash_rounds import MINHASH_DEDUP, STEP
    from pipeline.round_driver import decide
    from pipeline.shards import read_json, read_parquet
    from stages.duplicates import DROPS_SCHEMA

    root = tempfile.mkdtemp(prefix="bench-dedup-")
    layout, shards = write_shards(corpus, root)
    if fresh_ray and ray.is_initialized():
        ray.shutdown()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        warm_layout, warm_shards = write_shards(
            corpus[: 20 * WARM_UP_SHARDS], f"{root}/warm-up", per_shard=20
        )
        decide(MINHASH_DEDUP, warm_layout, warm_shards, [], [], "warm-up", cfg)
    try:
        with ProcessWatch() as watch:
            started = time.perf_counter()
            decide(MINHASH_DEDUP, layout, shards, [], [], "bench", cfg)
            seconds = time.perf_counter() - started
    finally:
        if fresh_ray:
            ray.shutdown()
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
        "cpu_seconds": watch.cpu_seconds,
        "docs_per_s_per_core": len(corpus) / seconds / cpus,
        "docs_per_cpu_s": len(corpus) / watch.cpu_seconds,
        "worker_peak_private_mib": max(watch.worker_peak.values(), default=0) / 1024,
        "worker_peak_task": watch.worker_peak_task.get(
            max(watch.worker_peak, key=watch.worker_peak.get, default=-1), ""
        ),
        "worker_peak_hwm_mib": max(watch.worker_hwm.values(), default=0) / 1024,
        "driver_growth_mib": (watch.driver_peak - watch.driver_start) / 1024,
        "workers": len(watch.worker_peak),
        "report": report["report"] | report["layout"],
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
    """datatrove's four MinHash stages, one worker; CPU time from the child's rusage
    (it includes the interpreter start and imports, a second or two)."""
    import resource

    work = Path(tempfile.mkdtemp(prefix="bench-datatrove-"))
    (work / "in").mkdir()
    with open(work / "in" / "docs.jsonl", "w") as handle:
        for name, text in corpus:
            handle.write(json.dumps({"id": name, "text": text}) + "\n")
    (work / "run.py").write_text(DATATROVE_SCRIPT)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [peer_python, str(work / "run.py"), str(work)], capture_output=True, text=True, timeout=3600
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        print(f"datatrove failed: {result.stderr[-1500:]}", file=sys.stderr)
        return None
    seconds = json.loads(result.stdout.strip().splitlines()[-1])["seconds"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    removed = set()
    for path in (work / "removed").glob("*.jsonl"):
        removed |= {json.loads(line)["id"] for line in path.read_text().splitlines()}
    shutil.rmtree(work, ignore_errors=True)
    return {
        "removed": removed,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "docs_per_s_per_core": len(corpus) / seconds,
        "docs_per_cpu_s": len(corpus) / cpu,
    }


def accuracy(removed: set[str], truth: set[str]) -> tuple[float, float]:
    hits = len(removed & truth)
    return hits / max(1, len(removed)), hits / max(1, len(truth))


def signature_speed(corpus: list[tuple[str, str]], cfg: MinHashConfig) -> tuple[float, float]:
    """Documents per CPU-second in one process, per shard-sized batch: (shingles
    alone, shingles + signatures + band keys)."""
    signer = Signer(cfg)
    texts = [t for _, t in corpus]
    shingle_hashes(texts[:2], cfg)  # the word table and permutations are built once
    signer.band_keys(signer.signatures(*shingle_hashes(texts[:2], cfg)))
    shingles_only = signing = 0.0
    for start in range(0, len(texts), DOCS_PER_SHARD):
        began = time.process_time()
        hashes, offsets = shingle_hashes(texts[start : start + DOCS_PER_SHARD], cfg)
        middle = time.process_time()
        signer.band_keys(signer.signatures(hashes, offsets))
        shingles_only += middle - began
        signing += time.process_time() - middle
    return len(texts) / shingles_only, len(texts) / (shingles_only + signing)


def find_peer_python(given: str | None) -> str | None:
    """``--peer-python``, else ``$DATATROVE_PYTHON`` or the bench cache's datatrove venv
    (``bench.peers``; ``--install-peer`` creates it with pip)."""
    if given:
        return given
    from bench.peers import find_datatrove

    peer = find_datatrove(install=False)
    return str(peer.python) if peer.available else None


def _scaled_truth(truth: set[str], copies: int) -> set[str]:
    return {n if r == 0 else f"{n}@{r}" for n in truth for r in range(copies)}


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
        "--peer-python", default=None, help="a python with datatrove[processing] installed"
    )
    parser.add_argument("--install-peer", action="store_true", help="pip-install datatrove")
    parser.add_argument("--peer-scale", type=int, default=4, help="scale datatrove runs at")
    parser.add_argument("--no-verify", action="store_true", help="also run without verification")
    parser.add_argument(
        "--partition-rows", type=int, default=None, help="the config's partition_rows"
    )
    parser.add_argument(
        "--verify-partition-bytes",
        type=int,
        default=None,
        help="the config's verify_partition_bytes",
    )
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    notes: list[str] = []
    if not (args.data / "neardup").is_dir():
        message = f"skipped: {args.data} not found (the shared real-data folder)"
        print(message)
        write_json(args.json, "dedup", [], [message])
        return 0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("PIPELINE_PROGRESS", "0")
    if args.install_peer:
        from bench.peers import find_datatrove

        find_datatrove(install=True)
    scales = [int(s) for s in args.scales.split(",") if s]
    peer_scale = args.peer_scale
    sizes = {
        key: value
        for key, value in (
            ("partition_rows", args.partition_rows),
            ("verify_partition_bytes", args.verify_partition_bytes),
        )
        if value is not None
    }
    cfg = MinHashConfig(**sizes)
    corpus = build_corpus(args.data, cfg)
    if args.quick:  # a smoke size: a slice of the shuffled corpus, truth recomputed on it
        corpus, scales, peer_scale = corpus[:300], [1, 2], 1
    words = sum(len(t.split()) for _, t in corpus)
    print(f"corpus: {len(corpus)} documents, {words / len(corpus):.0f} words each on average")
    truth = brute_force_removed(corpus, cfg)
    print(f"truth (brute force, Jaccard >= {cfg.threshold}): {len(truth)} documents to remove")
    rows: list[Row] = []
    fresh = not args.quick

    # Backends: the same corpus, the same step, only the signatures differ.
    by_backend = {}
    for backend in ("rensa", "datasketch"):
        settings = MinHashConfig(backend=backend, **sizes)
        shingles_speed, signed_speed = signature_speed(corpus, settings)
        run = run_ours(corpus, settings, args.cpus, fresh)
        precision, recall = accuracy(run["removed"], truth)
        by_backend[backend] = {**run, "precision": precision, "recall": recall,
                               "signed_per_cpu_s": signed_speed}  # fmt: skip
        print(
            f"backend {backend}: shingles alone {shingles_speed:.0f} docs/CPU-s, with "
            f"signatures and band keys {signed_speed:.0f} docs/CPU-s (one process); whole "
            f"step: precision {precision:.4f}, recall {recall:.4f}, "
            f"{run['docs_per_s_per_core']:.0f} docs/s/core wall, "
            f"{run['docs_per_cpu_s']:.0f} docs/CPU-s ({run['seconds']:.1f} s, "
            f"{run['cpu_seconds']:.1f} CPU-s on {args.cpus} CPUs)"
        )
    ours_b, peer_b = by_backend["rensa"], by_backend["datasketch"]
    for measure, key, unit in (
        ("precision, 1x", "precision", "removed documents vs brute-force Jaccard >= 0.8"),
        ("recall, 1x", "recall", "removed documents vs brute-force Jaccard >= 0.8"),
        ("shingles + signatures + band keys, one process", "signed_per_cpu_s", "docs/CPU-s"),
        ("whole step, 1x", "docs_per_cpu_s", "docs per CPU-second (all processes)"),
    ):
        rows.append(row(f"backend rensa vs datasketch: {measure}", ours_b[key], peer_b[key],
                        peer_name="datasketch backend", unit=unit))  # fmt: skip
    if args.no_verify:
        settings = MinHashConfig(verify_candidates=False, **sizes)
        run = run_ours(corpus, settings, args.cpus, fresh)
        precision, recall = accuracy(run["removed"], truth)
        print(
            f"no verification: bands x rows {settings.band_layout()}, precision "
            f"{precision:.4f}, recall {recall:.4f}, {run['docs_per_cpu_s']:.0f} docs/CPU-s"
        )

    runs = {1: by_backend["rensa"]}
    for copies in scales:
        scaled = replicate(corpus, copies)
        run = runs.get(copies) or run_ours(scaled, cfg, args.cpus, fresh)
        runs[copies] = run
        precision, recall = accuracy(run["removed"], _scaled_truth(truth, copies))
        run |= {"precision": precision, "recall": recall, "docs": len(scaled)}
        print(
            f"scale {copies:>2}x: {len(scaled)} docs, {run['seconds']:.1f} s "
            f"({run['cpu_seconds']:.1f} CPU-s), {run['docs_per_s_per_core']:.0f} docs/s/core "
            f"wall, {run['docs_per_cpu_s']:.0f} docs/CPU-s, precision {precision:.4f}, "
            f"recall {recall:.4f}, peak private memory per worker "
            f"{run['worker_peak_private_mib']:.0f} MiB over {run['workers']} workers "
            f"(running {run['worker_peak_task'][:48]!r} at its peak) "
            f"(VmHWM {run['worker_peak_hwm_mib']:.0f} MiB, object store pages included), "
            f"driver +{run['driver_growth_mib']:.0f} MiB during the step; tasks: "
            f"{run['report']['map_tasks']} sign, {run['report']['partitions']} bucket "
            f"(band partitions), {run['report']['groups']} per verification round, "
            f"later rounds in the {run['report']['path']}"
        )
        rows.append(row(f"peak private memory per Ray worker, {copies}x ({len(scaled)} docs)",
                        run["worker_peak_private_mib"], unit="MiB"))  # fmt: skip
        rows.append(row(f"whole step, {copies}x", run["docs_per_cpu_s"],
                        unit="docs per CPU-second (all processes)"))  # fmt: skip
    if len(scales) > 1:
        low, high = runs[min(scales)], runs[max(scales)]
        rows.append(row(
            f"peak worker memory growth {min(scales)}x -> {max(scales)}x",
            high["worker_peak_private_mib"] / max(low["worker_peak_private_mib"], 1e-9),
            unit="ratio (1.0 = flat)", higher_is_better=False))  # fmt: skip

    peer_python = find_peer_python(args.peer_python)
    if peer_python is None:
        message = "datatrove: skipped (no peer venv: --peer-python PATH or --install-peer)"
        print(message)
        notes.append(message)
    else:
        if peer_scale not in runs:
            scaled = replicate(corpus, peer_scale)
            runs[peer_scale] = run_ours(scaled, cfg, args.cpus, fresh)
            runs[peer_scale] |= dict(
                zip(("precision", "recall"),
                    accuracy(runs[peer_scale]["removed"], _scaled_truth(truth, peer_scale)),
                    strict=True))  # fmt: skip
        ours = runs[peer_scale]
        peer = run_datatrove(replicate(corpus, peer_scale), peer_python)
        if peer is not None:
            precision, recall = accuracy(peer["removed"], _scaled_truth(truth, peer_scale))
            print(
                f"datatrove at {peer_scale}x: precision {precision:.4f}, recall {recall:.4f}, "
                f"{peer['docs_per_s_per_core']:.1f} docs/s/core wall, "
                f"{peer['docs_per_cpu_s']:.1f} docs/CPU-s ({peer['seconds']:.1f} s, "
                f"{peer['cpu_seconds']:.1f} CPU-s, one worker)"
            )
            print(
                f"ratios ours/datatrove at {peer_scale}x: docs per CPU-second "
                f"{ours['docs_per_cpu_s'] / peer['docs_per_cpu_s']:.1f}x, docs/s/core wall "
                f"{ours['docs_per_s_per_core'] / peer['docs_per_s_per_core']:.1f}x, precision "
                f"{ours['precision'] / max(precision, 1e-9):.3f}, "
                f"recall {ours['recall'] / max(recall, 1e-9):.3f}"
            )
            where = f"{peer_scale}x"
            rows += [
                row(f"whole step throughput, {where}", ours["docs_per_cpu_s"],
                    peer["docs_per_cpu_s"], peer_name="datatrove",
                    unit="docs per CPU-second (all processes)"),
                row(f"whole step throughput (wall), {where}", ours["docs_per_s_per_core"],
                    peer["docs_per_s_per_core"], peer_name="datatrove",
                    unit=f"docs/s per core (ours on {args.cpus} CPUs, datatrove 1 worker)"),
                row(f"precision, {where}", ours["precision"], precision, peer_name="datatrove",
                    unit="removed documents vs brute-force Jaccard >= 0.8"),
                row(f"recall, {where}", ours["recall"], recall, peer_name="datatrove",
                    unit="removed documents vs brute-force Jaccard >= 0.8"),
            ]  # fmt: skip
    notes.append(
        f"corpus {len(corpus)} documents ({words / len(corpus):.0f} words each), "
        f"{len(truth)} to remove at Jaccard >= {cfg.threshold}; --cpus {args.cpus}"
    )
    notes.append(
        "docs per CPU-second counts every process of the step (driver, raylet, GCS, "
        "workers) and is what a shared machine's load inflates least; wall-clock "
        "docs/s/core is printed beside it"
    )
    write_json(args.json, "dedup", rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
