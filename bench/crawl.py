"""The crawl benchmark of issue 18: one process drives every row on the same input.

Input: N real web pages (default 3,000) as 30 WARC files, built from ``../shared/data``
and Debian's documentation packages by ``bench.corpus`` (pages only), plus the shared
DAniEL news pages and the Debian handbook's 26 locales so that 3,000 pages are all
distinct, round-robin over the kinds; cached under the bench cache
(``~/.cache/longcat-bench/crawl/``). Without either source, the demo generator's pages
(the notes say so). Rows, each a subprocess measured from outside:

* **floor**: the bare libraries in one loop in one process: our WARC reader,
  ``trafilatura.extract`` with the extract stage's options (no time limit), lid.176 via
  the langid stage's model file, our Gopher rule functions, blake2b digests of the
  normalised text and MinHash signatures + LSH band keys (``stages.minhash``);
* **ours** at 1 and 2 CPUs: ``python -m pipeline curate`` on a config with extract,
  langid, heuristics, exact and MinHash dedup, ``ray.num_cpus`` 1 and 2;
* **datatrove** with the same steps (WarcReader, Trafilatura, LanguageFilter, Gopher
  repetition and quality, exact dedup, MinHash) on 1 and 2 tasks;
* **one large file**: the floor's extracted texts, repeated to a size several times the
  config's ``shard_input_bytes``, as ONE JSONL file; ours at 1 and 2 CPUs (langid,
  heuristics, exact and MinHash dedup): does one big input use the second CPU?

CPU seconds are those of the whole process tree: ``utime + stime`` of every descendant
(Ray's raylet, GCS, workers; datatrove's pool), sampled from /proc every 0.1 s and kept
per process until it exits (followed after the command returns, when Ray's daemons
outlive the driver), and compared with the ``wait4`` rusage of the command (itself and
every descendant it reaped); the larger is used, the difference is reported. A process
that lives less than one sampling interval and is not reaped by the command is not
seen. Peak memory is the largest sampled sum of private resident memory (VmRSS -
RssShmem) over the tree. The load average at start is recorded: on a busy machine wall
times and speed-ups mean little.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.contract import Row, add_contract_arguments, row, write_json
from bench.corpus import (
    DEFAULT_DATA,
    MAX_TEXT_BYTES,
    MIN_TEXT_BYTES,
    Item,
    Pool,
    _response,
    build_pool,
)
from bench.e2e import LANGUAGES, LID_MODEL, MIN_LANGUAGE_SCORE, _private_kib
from bench.peers import cache_dir, find_datatrove

DEFAULT_PAGES = 3000
QUICK_PAGES = 60
WARC_FILES = 30
HEURISTIC_PRESETS = ["gopher_repetition", "gopher_quality"]
DEFAULT_LARGE_MB = 128.0  # the one-file case: cut into LARGE_SHARDS pieces
QUICK_LARGE_MB = 2.0
LARGE_SHARDS = 8  # the large file is this many times the config's shard_input_bytes
SAMPLE_SECONDS = 0.1
ORPHAN_GRACE_SECONDS = 15.0  # how long a descendant that outlives the command is followed
SECTION_NAME = "Crawl: floor, ours at 1 and 2 CPUs, datatrove"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the crawl


@dataclass(frozen=True)
class Crawl:
    """The WARC files of one crawl and what is in them."""

    warc_dir: Path
    pages: int
    megabytes: float
    origin: str
    by_kind: dict[str, int]

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        return (
            f"{self.pages} web pages in {len(list(self.warc_dir.glob('*.warc.gz')))} WARC"
            f" files, {self.megabytes:.1f} MB compressed, from {self.origin}: {kinds}"
        )


def page_pool(pool: Pool) -> Pool:
    """Only the web pages of ``pool`` (texts have nothing to extract)."""
    pages = Pool(notes=list(pool.notes), origin=pool.origin)
    for items in pool.kinds.values():
        for item in items:
            if item.is_page:
                pages.add(item)
    return pages


def add_more_pages(pool: Pool, data: Path | None, debian: bool) -> None:
    """More real pages than ``bench.corpus`` takes, so that 3,000 pages need no copies:
    the DAniEL news articles of the shared data (five languages) and, with ``debian``,
    the Debian Administrator's Handbook in its 26 locales (``apt-get download``, as
    ``bench.filter_recall``). Both are added only where they already are or can be had."""
    daniel = data / "web" / "daniel-dev" / "html" if data is not None else None
    if daniel is not None and daniel.is_dir():
        for path in sorted(daniel.glob("*.html.gz")):
            _date, host, key = path.name.removesuffix(".html.gz").split("_", 2)
            body = gzip.decompress(path.read_bytes())
            pool.add(Item("web/daniel-dev", f"https://{host}/{key}", body))
    if not debian:
        return
    from bench.filter_recall import ensure_handbook

    handbook = ensure_handbook()
    if handbook is None:
        pool.notes.append("debian-handbook not available: its pages are not in the crawl")
        return
    for path in sorted(handbook.rglob("*.html")):
        if MIN_TEXT_BYTES <= path.stat().st_size <= MAX_TEXT_BYTES:
            url = f"https://debian-handbook.info/browse/{path.relative_to(handbook)}"
            pool.add(Item("debian/handbook", url, path.read_bytes()))


def build_crawl(pool: Pool, pages: int, folder: Path) -> Crawl:
    """``pages`` pages of ``pool`` round-robin over kinds, as WARC_FILES files in
    ``folder``; reused when ``folder`` already holds the same selection."""
    items = pool.take(pages)
    key = hashlib.sha256("\n".join(i.url for i in items).encode()).hexdigest()[:16]
    manifest = folder / "crawl.json"
    if manifest.is_file():
        cached = json.loads(manifest.read_text())
        if cached.get("key") == key:
            return Crawl(folder / "warc", cached["pages"], cached["megabytes"],
                         cached["origin"], cached["by_kind"])  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    warc_dir = folder / "warc"
    warc_dir.mkdir(parents=True)
    files = min(WARC_FILES, len(items))
    for number in range(files):
        chunk = items[number::files]
        (warc_dir / f"crawl-{number:05d}.warc.gz").write_bytes(
            b"".join(_response(item) for item in chunk)
        )
    by_kind: dict[str, int] = {}
    for item in items:
        by_kind[item.kind] = by_kind.get(item.kind, 0) + 1
    size = sum(p.stat().st_size for p in warc_dir.iterdir())
    crawl = Crawl(warc_dir, len(items), size / 1e6, pool.origin, by_kind)
    body = {"key": key, "pages": crawl.pages, "megabytes": crawl.megabytes,
            "origin": crawl.origin, "by_kind": by_kind}  # fmt: skip
    manifest.write_text(json.dumps(body, indent=1) + "\n")
    return crawl


# ---------------------------------------------------------------- measuring a tree


def _cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(start time, utime + stime) of ``pid`` in clock ticks; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after the command's ")": state is field 3, so utime (14) is index 11, starttime 19
    return int(fields[19]), int(fields[11]) + int(fields[12])


def _tree_or_session(root: int) -> set[int]:
    """``root``, its live descendants, and every process of the session ``root`` leads
    (the command starts one): a daemon whose parent exited is reparented out of the
    tree but stays in the session unless it calls setsid itself."""
    children: dict[int, list[int]] = {}
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        if int(fields[3]) == root:  # the session id
            found.add(int(entry))
    stack = [root]
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack.extend(children.get(pid, []))
    return found


class TreeSampler:
    """CPU seconds and peak private memory of a process and everything it starts,
    sampled from /proc; processes seen once are followed until they exit, also after
    the root is gone (Ray daemons reparented to init). The root must lead its own
    session (``start_new_session``) for orphans born after the last sample to be seen."""

    def __init__(self, root: int, interval: float = SAMPLE_SECONDS) -> None:
        self.root, self.interval = root, interval
        self.cpu_ticks: dict[tuple[int, int], int] = {}  # (pid, start) -> last utime+stime
        self.followed: set[int] = set()
        self.peak_kib = 0
        self.processes_seen = 0
        self._lock = threading.Lock()  # the sampling thread and the final look
        self._root_done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def root_exited(self) -> None:
        self._root_done.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> bool:
        """One sample; False once nothing followed is alive any more."""
        with self._lock:
            return self._sample()

    def _sample(self) -> bool:
        self.followed |= _tree_or_session(self.root)
        alive, total_kib = set(), 0
        for pid in self.followed:
            ticks = _cpu_ticks(pid)
            if ticks is None:
                continue
            start, cpu = ticks
            alive.add(pid)
            self.cpu_ticks[(pid, start)] = max(cpu, self.cpu_ticks.get((pid, start), 0))
            total_kib += _private_kib(pid)
        self.followed = alive
        self.processes_seen = len(self.cpu_ticks)
        self.peak_kib = max(self.peak_kib, total_kib)
        return bool(alive)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sample() and self._root_done.is_set():
                return
            self._stop.wait(self.interval)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu_ticks.values()) / CLOCK_TICKS

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


@dataclass
class Measured:
    """One command's exit status, wall time, CPU of its tree and peak memory."""

    status: int
    wall_s: float
    cpu_s: float
    cpu_sampled_s: float
    cpu_rusage_s: float
    peak_mib: float
    processes: int
    orphans: int
    killed: int  # descendants still alive ORPHAN_GRACE_SECONDS after the command
    started_at: float  # time.time() at start, to compare with output files' mtimes
    stderr_tail: str


def run_measured(
    command: list[str],
    env: dict[str, str],
    timeout: float,
    stdout: Path | None = None,
    grace_s: float = ORPHAN_GRACE_SECONDS,
) -> Measured:
    """Run ``command`` and measure its whole process tree until it and every process it
    started have exited; what is still alive ``grace_s`` after the command itself (a
    worker pool a failed run left behind) is killed, so that no run leaks into the
    next one's measurements."""
    import subprocess

    with tempfile.TemporaryFile("w+") as errors, open(stdout or os.devnull, "w") as out:
        started_at, started = time.time(), time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=errors, env=env,
                                   start_new_session=True)  # fmt: skip
        sampler = TreeSampler(process.pid).start()
        deadline = started + timeout
        status, rusage = None, None
        while status is None:
            pid, wait_status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid == process.pid:
                status, rusage = os.waitstatus_to_exitcode(wait_status), usage
                break
            if time.perf_counter() > deadline:
                os.killpg(process.pid, 9)
                _, wait_status, rusage = os.wait4(process.pid, 0)
                status = -9
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        process.returncode = status  # reaped by wait4 above
        sampler.sample()  # the last look at the tree before it is forgotten
        orphans = len(sampler.followed)
        sampler.root_exited()
        grace = time.perf_counter() + grace_s
        while sampler.followed and time.perf_counter() < grace:
            time.sleep(SAMPLE_SECONDS)
        sampler.stop()
        leftovers = sorted(sampler.followed)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        errors.seek(0)
        tail = errors.read()[-3000:]
    sampled = sampler.cpu_seconds
    used = (rusage.ru_utime + rusage.ru_stime) if rusage is not None else 0.0
    return Measured(status, wall, max(sampled, used), sampled, used, sampler.peak_mib,
                    sampler.processes_seen, orphans, len(leftovers), started_at, tail)  # fmt: skip


def _measured_fields(measured: Measured, documents: int) -> dict[str, Any]:
    return {
        "wall_s": measured.wall_s,
        "cpu_s": measured.cpu_s,
        "cpu_sampled_s": measured.cpu_sampled_s,
        "cpu_rusage_s": measured.cpu_rusage_s,
        "peak_mib": measured.peak_mib,
        "processes": measured.processes,
        "orphans": measured.orphans,
        "killed": measured.killed,
        "documents": documents,
        "docs_per_cpu_s": documents / measured.cpu_s if measured.cpu_s else None,
    }


# ---------------------------------------------------------------- the floor


def floor_loop(warc_dir: Path, texts_out: Path, result: Path) -> int:
    """Inside the floor subprocess: every step of the pipeline as bare library calls in
    one loop; writes the extracted texts (for the large-file case) and a summary."""
    import fasttext
    import numpy as np
    import pyarrow.fs as pafs

    from stages.base import DROP_REASON
    from stages.exact_dedup import normalize_text
    from stages.extract import ExtractConfig, extract_page, too_short
    from stages.heuristics import Heuristics, HeuristicsConfig
    from stages.langid import LABEL_PREFIX, LangIdConfig
    from stages.minhash import MinHashConfig, Signer, shingle_hashes
    from stages.readers import ReaderConfig, read_file

    extract_cfg = ExtractConfig(favor_precision=True, timeout_seconds=5.0)
    options = extract_cfg.trafilatura_options()
    lid_cfg = LangIdConfig(languages=LANGUAGES, min_score=MIN_LANGUAGE_SCORE)
    model = fasttext.load_model(str(LID_MODEL))
    rules = Heuristics(HeuristicsConfig(presets=HEURISTIC_PRESETS))
    minhash_cfg = MinHashConfig()
    signer = Signer(minhash_cfg)
    fates: dict[str, int] = {}
    digests: set[str] = set()
    survivors: list[str] = []
    read = 0
    with open(texts_out, "w", encoding="utf-8") as texts:
        for path in sorted(warc_dir.glob("*.warc.gz")):
            found = read_file(str(path), path.name, pafs.LocalFileSystem(), ReaderConfig())
            for doc in found:
                read += 1
                if doc[DROP_REASON] is not None or doc["html"] is None:
                    fates["read"] = fates.get("read", 0) + 1
                    continue
                text, _title = extract_page(doc["html"], doc["url"], options)
                if not text or too_short(text, extract_cfg) is not None:
                    fates["extract"] = fates.get("extract", 0) + 1
                    continue
                line = {"id": doc["url"], "url": doc["url"], "text": text}
                texts.write(json.dumps(line, ensure_ascii=False) + "\n")
                sample = text.strip()[: lid_cfg.max_chars].replace("\n", " ")
                labels, probs = model.predict([sample], k=1)
                language = labels[0][0].removeprefix(LABEL_PREFIX)
                minimum = lid_cfg.min_score_by_language.get(language, lid_cfg.min_score) or 0.0
                if language not in LANGUAGES or min(float(probs[0][0]), 1.0) < minimum:
                    fates["langid"] = fates.get("langid", 0) + 1
                    continue
                reason, _score, kept = rules._judge((text, None, language))
                if reason is not None:
                    fates["heuristics"] = fates.get("heuristics", 0) + 1
                    continue
                text = kept if kept is not None else text
                digest = hashlib.blake2b(normalize_text(text).encode(), digest_size=16).hexdigest()
                if digest in digests:
                    fates["exact_dedup"] = fates.get("exact_dedup", 0) + 1
                    continue
                digests.add(digest)
                survivors.append(text)
    hashes, offsets = shingle_hashes(survivors, minhash_cfg)  # type: ignore[arg-type]
    keys = signer.band_keys(signer.signatures(hashes, offsets)) if survivors else np.empty((0, 0))
    seen: set[tuple[int, int]] = set()
    near = 0
    for doc_keys in keys:  # a document sharing a band key with an earlier one is a candidate
        bands = {(band, int(key)) for band, key in enumerate(doc_keys)}
        near += bool(bands & seen)
        seen |= bands
    fates["minhash_candidates"] = near
    fates["kept"] = len(survivors) - near
    result.write_text(json.dumps({"read": read, "fates": fates}))
    return 0


def run_floor(crawl: Crawl, work: Path, timeout: float) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    result, texts = work / "floor.json", work / "texts.jsonl"
    command = [sys.executable, "-m", "bench.crawl", "floor", str(crawl.warc_dir), str(texts),
               str(result)]  # fmt: skip
    measured = run_measured(command, dict(os.environ), timeout)
    if measured.status != 0 or not result.is_file():
        return {"error": f"floor exited with {measured.status}: {measured.stderr_tail[-600:]}"}
    body = json.loads(result.read_text())
    return {**body, **_measured_fields(measured, crawl.pages), "texts": str(texts)}


# ---------------------------------------------------------------- ours


def write_curate_config(
    inputs: list[dict[str, str]], work: Path, cpus: int, shard_bytes: int, extract: bool
) -> Path:
    """A curate config (the CLI's format): extract (for pages), langid, heuristics,
    exact and MinHash dedup, embedded with ``cpus`` CPUs (in-process at 1, by the default
    ``ray.executor: auto``; Ray at more)."""
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "inputs": inputs,
        "output_dir": str(work / "curated"),
        "shard_input_bytes": shard_bytes,
        "reader": {"text_field": "text", "url_field": "url"},
        "stages": {
            "extract": {"favor_precision": True, "timeout_seconds": 5.0} if extract else None,
            "langid": {"languages": LANGUAGES, "min_score": MIN_LANGUAGE_SCORE},
            "heuristics": {"presets": HEURISTIC_PRESETS},
            "domain": None,
            "exact_dedup": {},
            "minhash_dedup": {},
        },
        "ray": {"num_cpus": cpus},
    }
    path = work / "curate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_ours(config: Path, documents: int, timeout: float) -> dict[str, Any]:
    """``python -m pipeline curate CONFIG --overwrite`` as a measured subprocess."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PIPELINE_PROGRESS": "0"}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    command = [sys.executable, "-m", "pipeline", "curate", str(config), "--overwrite"]
    measured = run_measured(command, env, timeout)
    if measured.status != 0:
        return {"error": f"curate exited with {measured.status}: {measured.stderr_tail[-600:]}"}
    curated = config.parent / "curated"
    firsts = [p.stat().st_mtime for p in (curated / "work" / "documents").glob("*.parquet")]
    first = min(firsts) - measured.started_at if firsts else None
    kept = None
    manifest = curated / "manifest.json"
    if manifest.is_file():
        kept = json.loads(manifest.read_text()).get("documents")
    return {**_measured_fields(measured, documents), "first_document_s": first, "kept": kept}


# ---------------------------------------------------------------- datatrove

DATATROVE_SCRIPT = r"""
import json, os, sys, time
from pathlib import Path

# At import, so that the worker processes (which import this file again) use our model
# file too instead of downloading theirs.
import datatrove.utils.lid as lid
lid.cached_asset_path_or_download = lambda *a, **k: os.environ["BENCH_LID_MODEL"]


def main(args):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (ExactDedupConfig, ExactDedupFilter,
        ExactDedupSignature, ExactFindDedups)
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets,
        MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (GopherQualityFilter, GopherRepetitionFilter,
        LanguageFilter)
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    work, cpus = Path(args["work"]), args["tasks"]
    def writer(name):
        return JsonlWriter(str(work / name), compression=None)
    def run(pipeline, tasks=cpus):  # never more worker processes than the CPUs asked for
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(tasks, cpus),
                              logging_dir=str(work / "logs" / str(time.time()))).run()

    exact = ExactDedupConfig(content_getter=lambda doc: doc.text)
    minhash = MinhashConfig()
    run([WarcReader(args["warc_dir"], glob_pattern="*.warc.gz"),
         Trafilatura(favour_precision=True, timeout=5.0, deduplicate=False),
         LanguageFilter(languages=args["languages"], language_threshold=args["min_score"]),
         GopherRepetitionFilter(), GopherQualityFilter(),
         writer("filtered"),
         ExactDedupSignature(str(work / "exact_sigs"), config=exact)])
    run([ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), config=exact)], 1)
    run([JsonlReader(str(work / "filtered")),
         ExactDedupFilter(str(work / "exact_dups"), config=exact),
         writer("exact"),
         MinhashDedupSignature(str(work / "signatures"), config=minhash)])
    run([MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"), config=minhash)],
        minhash.num_buckets)
    run([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=minhash)], 1)
    run([JsonlReader(str(work / "exact")),
         MinhashDedupFilter(str(work / "remove")),
         writer("deduped")])
    kept = sum(1 for p in (work / "deduped").glob("*.jsonl") for _ in open(p))
    print(json.dumps({"kept": kept}))


if __name__ == "__main__":  # datatrove's worker processes import this file again
    main(json.loads(sys.argv[1]))
"""


def run_datatrove(crawl: Crawl, work: Path, python: Path, tasks: int, timeout: float) -> dict:
    """datatrove's pipeline in its venv, ``tasks`` tasks on as many worker processes."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    script = work / "datatrove_crawl.py"
    script.write_text(DATATROVE_SCRIPT)
    args = {"work": str(work), "warc_dir": str(crawl.warc_dir), "tasks": tasks,
            "languages": LANGUAGES, "min_score": MIN_LANGUAGE_SCORE}  # fmt: skip
    output = work / "stdout.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DATATROVE_COLORIZE_LOGS": "0",
           "BENCH_LID_MODEL": str(LID_MODEL)}  # fmt: skip
    env.pop("PYTHONPATH", None)
    measured = run_measured([str(python), str(script), json.dumps(args)], env, timeout, output)
    lines = output.read_text().strip().splitlines() if output.is_file() else []
    if measured.status != 0 or not lines:
        return {"error": f"datatrove exited with {measured.status}: {measured.stderr_tail[-600:]}"}
    return {**json.loads(lines[-1]), **_measured_fields(measured, crawl.pages)}


# ---------------------------------------------------------------- the large file


def large_file_shard_bytes(size: int) -> int:
    """The ``shard_input_bytes`` that cuts a file of ``size`` bytes into LARGE_SHARDS
    pieces: rounded up, since the planner makes ceil(size / target) pieces (size // 8
    made 9, five waves on 2 CPUs where 8 make four)."""
    return max(1, -(-size // LARGE_SHARDS))


def write_large_file(texts: Path, target_bytes: int, out: Path) -> tuple[int, int]:
    """The floor's extracted texts repeated (distinct ids, exact copies) until the file
    holds ``target_bytes``; returns (documents, bytes)."""
    lines = [json.loads(line) for line in texts.read_text("utf-8").splitlines() if line]
    if not lines:
        raise ValueError("the floor extracted no text: no large file to build")
    out.parent.mkdir(parents=True, exist_ok=True)
    written, documents, copy = 0, 0, 0
    with open(out, "w", encoding="utf-8") as handle:
        while written < target_bytes:
            for line in lines:
                suffix = f"#copy{copy}" if copy else ""
                record = {**line, "id": line["id"] + suffix, "url": line["url"] + suffix}
                encoded = json.dumps(record, ensure_ascii=False) + "\n"
                handle.write(encoded)
                written += len(encoded.encode("utf-8"))
                documents += 1
                if written >= target_bytes:
                    break
            copy += 1
    return documents, written


# ---------------------------------------------------------------- the section


def _rate(run: dict[str, Any] | None) -> float | None:
    return None if not run or "error" in run else run.get("docs_per_cpu_s")


def _get(run: dict[str, Any] | None, key: str) -> float | None:
    return None if not run or "error" in run else run.get(key)


def _speedup(one: dict | None, two: dict | None) -> float | None:
    a, b = _get(one, "wall_s"), _get(two, "wall_s")
    return a / b if a and b else None


def section_rows(runs: dict[str, Any], peer_name: str) -> list[Row]:
    """The table: throughput per CPU-second against the floor and datatrove, speed-ups,
    memory, first document out, the large file."""
    floor, one, two = runs.get("floor"), runs.get("ours_1"), runs.get("ours_2")
    dt1, dt2 = runs.get("datatrove_1"), runs.get("datatrove_2")
    big1, big2 = runs.get("large_1"), runs.get("large_2")
    unit = "documents per CPU-second (whole process tree)"
    rows = [
        row("floor: bare libraries in one loop", _rate(floor), unit=unit),
        row("ours, 1 CPU, against the floor", _rate(one), _rate(floor),
            peer_name="floor", unit=unit),
        row("ours, 2 CPUs, against the floor", _rate(two), _rate(floor),
            peer_name="floor", unit=unit),
        row("ours, 1 CPU, against datatrove 1 task", _rate(one), _rate(dt1),
            peer_name=f"{peer_name}, 1 task", unit=unit),
        row("ours, 2 CPUs, against datatrove 2 tasks", _rate(two), _rate(dt2),
            peer_name=f"{peer_name}, 2 tasks", unit=unit),
        row("floor against datatrove 1 task", _rate(floor), _rate(dt1),
            peer_name=f"{peer_name}, 1 task", unit=unit),
        row("speed-up 1 -> 2 CPUs (wall), ours against datatrove's 1 -> 2 tasks",
            _speedup(one, two), _speedup(dt1, dt2), peer_name=peer_name,
            unit="wall(1) / wall(2)"),
        row("wall time, ours 1 CPU / datatrove 1 task", _get(one, "wall_s"), _get(dt1, "wall_s"),
            peer_name=peer_name, unit="s", higher_is_better=False),
        row("wall time, ours 2 CPUs / datatrove 2 tasks", _get(two, "wall_s"),
            _get(dt2, "wall_s"), peer_name=peer_name, unit="s", higher_is_better=False),
        row("peak memory, floor", _get(floor, "peak_mib"), unit="MiB (private RSS)"),
        row("peak memory, ours 1 CPU / datatrove 1 task", _get(one, "peak_mib"),
            _get(dt1, "peak_mib"), peer_name=peer_name,
            unit="MiB (private RSS, all processes)", higher_is_better=False),
        row("peak memory, ours 2 CPUs / datatrove 2 tasks", _get(two, "peak_mib"),
            _get(dt2, "peak_mib"), peer_name=peer_name,
            unit="MiB (private RSS, all processes)", higher_is_better=False),
        row("first document out, ours 1 CPU", _get(one, "first_document_s"),
            unit="s from command start (first work/documents file written)"),
        row("first document out, ours 2 CPUs", _get(two, "first_document_s"),
            unit="s from command start (first work/documents file written)"),
        row("one large JSONL file: ours, speed-up 1 -> 2 CPUs", _speedup(big1, big2),
            unit="wall(1) / wall(2)"),
        row("one large JSONL file: ours 1 CPU / 2 CPUs", _rate(big1), _rate(big2),
            peer_name="ours, 2 CPUs", unit=unit, compare=False),
        row("one large JSONL file: peak memory, ours 2 CPUs", _get(big2, "peak_mib"),
            unit="MiB (private RSS, all processes)"),
    ]  # fmt: skip
    load = runs.get("load_average_at_start")
    if load:
        rows.append(row("load average at start (1 min)", load[0], unit="runnable processes"))
    return rows


def _run_note(name: str, run: dict[str, Any] | None) -> str:
    if run is None:
        return f"{name}: not run"
    if "error" in run:
        return f"{name}: FAILED: {run['error']}"
    parts = [f"wall {run['wall_s']:.1f} s", f"CPU {run['cpu_s']:.1f} s"]
    if abs(run["cpu_sampled_s"] - run["cpu_rusage_s"]) > 0.05:
        parts.append(f"(sampled {run['cpu_sampled_s']:.1f} s, wait4 rusage"
                     f" {run['cpu_rusage_s']:.1f} s)")  # fmt: skip
    parts.append(f"peak {run['peak_mib']:.0f} MiB over {run['processes']} processes")
    if run.get("orphans"):
        parts.append(f"{run['orphans']} outlived the command and were followed")
    if run.get("killed"):
        parts.append(f"{run['killed']} still alive {ORPHAN_GRACE_SECONDS:.0f} s later, killed")
    if run.get("first_document_s") is not None:
        parts.append(f"first document out at {run['first_document_s']:.1f} s")
    if run.get("kept") is not None:
        parts.append(f"{run['kept']} documents kept")
    if run.get("fates"):
        parts.append("fates " + ", ".join(f"{k} {v}" for k, v in run["fates"].items()))
    return f"{name}: " + "; ".join(parts)


def run_crawl(
    data: Path | None,
    cache: Path,
    work: Path,
    pages: int,
    large_mb: float,
    debian: bool,
    datatrove_python: Path | None,
    peer_status: str,
    timeout: float = 1800,
) -> dict[str, Any]:
    """Every row on one crawl; the section for ``bench all`` (name, rows, notes)."""
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    log(f"crawl: load average at start {load}")
    pool = page_pool(build_pool(data, cache, debian))
    if not pool.origin.endswith("demo"):  # real pages: as many kinds as can be had
        add_more_pages(pool, data, debian)
    folder = cache / "crawl" / f"pages-{pages}-{pool.origin.replace('+', '-')}"
    crawl = build_crawl(pool, pages, folder)
    log(f"crawl: {crawl.describe()}")
    size = sum(p.stat().st_size for p in crawl.warc_dir.iterdir())
    shard_bytes = max(1, size // WARC_FILES)  # about one WARC file per shard
    runs: dict[str, Any] = {"load_average_at_start": load}
    from pipeline.config import CurateConfig

    lead = CurateConfig.model_fields["lead_shard_bytes"].default
    log("crawl: floor (bare libraries, one loop) ...")
    runs["floor"] = run_floor(crawl, work / "floor", timeout)
    for cpus in (1, 2):
        log(f"crawl: ours, {cpus} CPU(s) ...")
        inputs = [{"path": str(crawl.warc_dir), "name": "crawl"}]
        config = write_curate_config(inputs, work / f"ours-{cpus}", cpus, shard_bytes, True)
        runs[f"ours_{cpus}"] = run_ours(config, crawl.pages, timeout)
    if datatrove_python is not None:
        for tasks in (1, 2):
            log(f"crawl: datatrove, {tasks} task(s) ...")
            runs[f"datatrove_{tasks}"] = run_datatrove(
                crawl, work / f"datatrove-{tasks}", datatrove_python, tasks, timeout
            )
    notes = [
        f"crawl: {crawl.describe()}; {len(pool)} distinct pages available"
        + (" (the crawl repeats pages as #copy URLs)" if len(pool) < pages else ""),
        *pool.notes,
        f"load average at start (1, 5, 15 min): {load}, on {os.cpu_count()} cores",
        "ours: `python -m pipeline curate` (embedded: in-process at 1 CPU, Ray at 2, as the"
        f" default ray.executor auto does), shard_input_bytes {shard_bytes:,}"
        f" (about one WARC file per shard; the first shard, the lead, {lead:,} bytes: the"
        " config's default lead_shard_bytes); extract (favor precision, 5 s limit), langid"
        f" ({', '.join(LANGUAGES)}, score >= {MIN_LANGUAGE_SCORE}), heuristics"
        f" ({', '.join(HEURISTIC_PRESETS)}), exact dedup, MinHash dedup; whole command timed,"
        " Ray start-up included",
        "floor: our WARC reader, trafilatura.extract with the extract stage's options (no"
        " time limit), lid.176 (the langid stage's model file), the heuristics stage's rule"
        " functions, blake2b of the normalised text, MinHash signatures and LSH band keys"
        " (stages.minhash), no Arrow, no Ray, no output but the extracted texts",
    ]
    for name in ("floor", "ours_1", "ours_2", "datatrove_1", "datatrove_2"):
        if name in runs:
            notes.append(_run_note(name, runs[name]))
    if datatrove_python is None:
        notes.append(f"datatrove: {peer_status}")
    else:
        notes.append(
            "datatrove: LocalPipelineExecutor, tasks = workers = 1 or 2 (the bucket pass: one"
            " task per bucket on 1 or 2 workers); WarcReader, Trafilatura"
            " (favour_precision, timeout 5 s), LanguageFilter, Gopher repetition and quality,"
            " exact dedup (signature, find, filter), MinHash (signature, buckets, cluster,"
            " filter); each pass a run of the executor"
        )
    floor = runs["floor"]
    if "error" not in floor:
        target = int(large_mb * 1e6)
        big = work / "large" / "texts.jsonl"
        documents, written = write_large_file(Path(floor.pop("texts")), target, big)
        big_shard = large_file_shard_bytes(written)
        for cpus in (1, 2):
            log(f"crawl: one large file ({written / 1e6:.0f} MB), ours, {cpus} CPU(s) ...")
            inputs = [{"path": str(big), "name": "large"}]
            config = write_curate_config(
                inputs, work / f"large-{cpus}", cpus, big_shard, extract=False
            )
            runs[f"large_{cpus}"] = run_ours(config, documents, timeout)
        notes.append(
            f"large file: the floor's extracted texts repeated to one JSONL file of"
            f" {written / 1e6:.1f} MB, {documents} documents (copies are exact duplicates"
            f" with distinct ids: exact dedup drops them), shard_input_bytes {big_shard:,}"
            f" (the planner cuts the file into {LARGE_SHARDS} pieces of at most that size,"
            f" after the lead shard of the config's lead_shard_bytes, {lead:,})"
        )
        for name in ("large_1", "large_2"):
            notes.append(_run_note(name, runs[name]))
        shutil.rmtree(work / "large", ignore_errors=True)
    failed = [f"{k}: {v['error'][:300]}" for k, v in runs.items()
              if isinstance(v, dict) and "error" in v]  # fmt: skip
    what = (
        "Issue 18's crawl run: the bare-library floor, `python -m pipeline curate` at 1 and"
        " 2 CPUs and datatrove at 1 and 2 tasks on the same WARC files, plus one large JSONL"
        " file; CPU seconds and peak memory of each command's whole process tree."
    )
    return {
        "name": SECTION_NAME,
        "what": what,
        "status": ("failed: " + "; ".join(failed)) if failed else "ok",
        "rows": section_rows(runs, "datatrove"),
        "notes": notes,
        "runs": {k: v for k, v in runs.items() if k != "load_average_at_start"},
    }


def print_table(section: dict[str, Any]) -> None:
    """The rows as a plain text table on stdout."""
    print(f"{'measure':<72}{'ours':>10}{'peer':>10}{'ratio':>8}  unit")
    for item in section["rows"]:
        cells = [item["ours"], item["peer"], item["ratio"]]
        text = "".join(f"{'-' if v is None else format(v, '.2f'):>{w}}"
                       for v, w in zip(cells, (10, 10, 8), strict=True))  # fmt: skip
        print(f"{item['measure'][:71]:<72}{text}  {item['unit']}")
    for note in section["notes"]:
        print(f"- {note}")


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.crawl [--pages N] [--quick] [--json PATH]``, or the floor loop
    (``floor WARC_DIR TEXTS RESULT``, started by ``run_floor``)."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["floor"]:
        return floor_loop(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    parser = argparse.ArgumentParser(
        prog="python -m bench.crawl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_contract_arguments(parser)
    parser.add_argument("--pages", type=int, default=None, help=f"default {DEFAULT_PAGES}")
    parser.add_argument(
        "--large-mb",
        type=float,
        default=None,
        help=f"size of the one-file case (default {DEFAULT_LARGE_MB:.0f})",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-debian", action="store_true", help="no Debian package pages")
    parser.add_argument("--no-peers", action="store_true", help="do not run datatrove")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (kept)")
    args = parser.parse_args(argv)
    pages = args.pages or (QUICK_PAGES if args.quick else DEFAULT_PAGES)
    large_mb = args.large_mb or (QUICK_LARGE_MB if args.quick else DEFAULT_LARGE_MB)
    cache = cache_dir()
    if args.no_peers:
        peer_python, peer_status = None, "not run (--no-peers)"
    else:
        peer = find_datatrove(install=False, cache=cache)
        peer_python, peer_status = peer.python, peer.status
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    try:
        section = run_crawl(
            args.data,
            cache,
            work,
            pages,
            large_mb,
            not (args.quick or args.no_debian),
            peer_python,
            peer_status,
        )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(section)
    write_json(args.json, section["name"], section["rows"], section["notes"])
    return 0 if section["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
