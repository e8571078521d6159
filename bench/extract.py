"""Extract stage against a bare ``trafilatura.extract`` loop with the same options.

Prints (a) pages/s of the stage on the main thread (SIGALRM time limit, a Ray task),
on a pool thread (child-process time limit, a Ray actor pool) and of the bare loop,
with the ratios ours/bare; (b) on web/aeb the macro token F1 against the ground-truth
article bodies for favor_precision True and False, stage and bare loop side by side
(equal options must give equal texts), plus the share of trafilatura's evaluation
snippets found ("with") and avoided ("without") on the mostly German web/trafilatura.

    python -m bench.extract [--data DIR] [--limit N] [--rounds R] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.contract import Row, add_contract_arguments, row, write_json
from stages.base import DOCUMENT_SCHEMA
from stages.extract import Extract, ExtractConfig

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "web"
CORPORA = ("aeb", "trafilatura", "readability")
BATCH_ROWS = 64
CHUNK_PAGES = 16  # pages per timing turn


@dataclass(frozen=True)
class Page:
    corpus: str
    key: str  # aeb page id, trafilatura URL or readability folder
    url: str | None
    html: str


def _decode(raw: bytes) -> str:
    """Decode as trafilatura would, so both loops get the same string."""
    from trafilatura.utils import decode_file

    return decode_file(raw)


def load_pages(data: Path, limit: int | None) -> list[Page]:
    pages: list[Page] = []
    truth = json.loads((data / "aeb" / "ground-truth.json").read_text())
    for path in sorted((data / "aeb" / "html").glob("*.html.gz"))[:limit]:
        key = path.name.removesuffix(".html.gz")
        pages.append(
            Page("aeb", key, truth[key]["url"], _decode(gzip.decompress(path.read_bytes())))
        )
    evaldata = json.loads((data / "trafilatura" / "evaldata.json").read_text())
    for url, entry in list(evaldata.items())[:limit]:
        raw = (data / "trafilatura" / entry["file"]).read_bytes()
        pages.append(Page("trafilatura", url, url, _decode(raw)))
    for folder in sorted(p for p in (data / "readability").iterdir() if p.is_dir())[:limit]:
        raw = (folder / "source.html").read_bytes()
        pages.append(Page("readability", folder.name, None, _decode(raw)))
    return pages


def to_table(pages: list[Page]) -> pa.Table:
    rows = [
        {"id": p.key, "shard": 0, "ordinal": i, "source": p.corpus, "record": f"row:{i}"}
        | {"url": p.url, "format": "html", "html": p.html}
        for i, p in enumerate(pages)
    ]
    return pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)


def run_stage(stage: Extract, table: pa.Table) -> list[str | None]:
    texts: list[str | None] = []
    for start in range(0, table.num_rows, BATCH_ROWS):
        texts.extend(stage(table.slice(start, BATCH_ROWS)).column("text").to_pylist())
    return texts


def run_bare(pages: list[Page], options: dict[str, Any]) -> list[str | None]:
    import trafilatura

    return [trafilatura.extract(p.html, url=p.url, **options) for p in pages]


def in_thread(function: Callable[[], Any]) -> Any:
    """Run off the main thread, where the stage must use its child process."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(function()))
    worker.start()
    worker.join()
    return result[0]


def token_f1(predicted: str | None, truth: str) -> tuple[float, float, float]:
    """Bag-of-whitespace-tokens precision, recall and F1 (0 for an empty side)."""
    pred, gold = Counter((predicted or "").split()), Counter(truth.split())
    overlap = sum((pred & gold).values())
    if not overlap:
        return 0.0, 0.0, 0.0
    precision, recall = overlap / sum(pred.values()), overlap / sum(gold.values())
    return precision, recall, 2 * precision * recall / (precision + recall)


def child_cpu_seconds(stage: Extract) -> float:
    """CPU time of the stage's child process so far (Linux /proc; 0 where unknown)."""
    process = stage.child.process
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (AttributeError, OSError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def speed(pages: list[Page], cfg: ExtractConfig, rounds: int) -> dict[str, float]:
    """Modes take turns on each chunk of pages, in rotating order, so that load from
    other processes on a shared machine falls on all of them alike. Returns the rates
    over all corpora (pages/s per mode, and the CPU-time ratios)."""
    stage, options = Extract(cfg), cfg.trafilatura_options()
    modes: dict[str, Callable[[list[Page], pa.Table], Any]] = {
        "bare": lambda chunk, _: run_bare(chunk, options),
        "main": lambda _, table: stage(table),
        "thread": lambda _, table: in_thread(lambda: stage(table)),
    }
    chunks = [
        chunk
        for corpus in CORPORA
        for subset in [[p for p in pages if p.corpus == corpus]]
        for chunk in (subset[i : i + CHUNK_PAGES] for i in range(0, len(subset), CHUNK_PAGES))
    ]
    tables = [to_table(chunk) for chunk in chunks]
    for run in modes.values():  # warm-up: lazy imports, the child's start
        run(chunks[0][:2], tables[0].slice(0, 2))
    wall: defaultdict[tuple[str, str], float] = defaultdict(float)
    cpu: defaultdict[tuple[str, str], float] = defaultdict(float)
    for turn in range(rounds * len(chunks)):
        chunk, table = chunks[turn % len(chunks)], tables[turn % len(chunks)]
        names = list(modes)
        for mode in names[turn % 3 :] + names[: turn % 3]:
            wall0, cpu0 = time.perf_counter(), time.process_time() + child_cpu_seconds(stage)
            modes[mode](chunk, table)
            wall[mode, chunk[0].corpus] += time.perf_counter() - wall0
            cpu[mode, chunk[0].corpus] += time.process_time() + child_cpu_seconds(stage) - cpu0
    stage.child.close()
    print(f"\n(a) pages/s (wall clock, {rounds} rounds), favor_precision={cfg.favor_precision};")
    print("    main: SIGALRM limit (Ray task), thread: child-process limit (Ray actor pool);")
    print("    cpu: the same ratios in CPU seconds (parent + child), robust to a busy machine")
    return _print_rates(pages, rounds, wall, cpu)


def _print_rates(
    pages: list[Page],
    rounds: int,
    wall: dict[tuple[str, str], float],
    cpu: dict[tuple[str, str], float],
) -> dict[str, float]:
    """Print the per-corpus table; return the "all" line's rates and CPU ratios."""
    print(f"{'corpus':<12}{'pages':>6}{'bare':>8}{'main':>8}{'thread':>8}", end="")
    print("".join(f"{h:>12}" for h in ("main/bare", "thread/bare", "cpu m/b", "cpu t/b")))
    for corpus in (*CORPORA, "all"):
        keys = CORPORA if corpus == "all" else (corpus,)
        n = rounds * sum(1 for p in pages if p.corpus in keys)
        rate = {m: n / sum(wall[m, c] for c in keys) for m in ("bare", "main", "thread")}
        cpu_rate = {m: n / sum(cpu[m, c] for c in keys) for m in ("bare", "main", "thread")}
        ratios = [rate["main"], rate["thread"], cpu_rate["main"], cpu_rate["thread"]]
        ratios = [r / (rate if i < 2 else cpu_rate)["bare"] for i, r in enumerate(ratios)]
        print(f"{corpus:<12}{n // rounds:>6}", end="")
        print(f"{rate['bare']:>8.1f}{rate['main']:>8.1f}{rate['thread']:>8.1f}", end="")
        print("".join(f"{r:>12.3f}" for r in ratios))
    return {**rate, "cpu_main_ratio": ratios[2], "cpu_thread_ratio": ratios[3]}


def quality(pages: list[Page], data: Path) -> dict[tuple[bool, str], float]:
    """Print the quality table; return the aeb macro F1 per (favor_precision, loop)."""
    f1: dict[tuple[bool, str], float] = {}
    truth = json.loads((data / "aeb" / "ground-truth.json").read_text())
    evaldata = json.loads((data / "trafilatura" / "evaldata.json").read_text())
    aeb = [p for p in pages if p.corpus == "aeb"]
    traf = [p for p in pages if p.corpus == "trafilatura"]
    print("\n(b) web/aeb macro token P / R / F1 (min_text_chars=0 so ours must equal bare);")
    print("    web/trafilatura snippets: share of 'with' found, of 'without' absent;")
    print("    p/s: pages/s of that loop over both corpora (wall clock, one pass)")
    print(
        f"{'favor_precision':<16}{'loop':<6}{'P':>7}{'R':>7}{'F1':>7}{'equal':>9}"
        f"{'with':>7}{'without':>9}{'p/s':>7}"
    )
    for precision in (True, False):
        cfg = ExtractConfig(favor_precision=precision, min_text_chars=0)
        table, wall0 = to_table(aeb + traf), time.perf_counter()
        ours = run_stage(Extract(cfg), table)
        wall1 = time.perf_counter()
        bare = run_bare(aeb + traf, cfg.trafilatura_options())
        rates = {
            "ours": len(ours) / (wall1 - wall0),
            "bare": len(ours) / (time.perf_counter() - wall1),
        }
        equal = sum(a == b for a, b in zip(ours, bare, strict=True))
        for loop, texts in (("ours", ours), ("bare", bare)):
            scores = [
                token_f1(t, truth[p.key]["articleBody"])
                for p, t in zip(aeb, texts[: len(aeb)], strict=True)
            ]
            p, r, f = (sum(s[i] for s in scores) / max(len(scores), 1) for i in range(3))
            f1[precision, loop] = f
            found, avoided = _snippets(texts[len(aeb) :], [evaldata[p.key] for p in traf])
            print(
                f"{precision!s:<16}{loop:<6}{p:>7.3f}{r:>7.3f}{f:>7.3f}"
                f"{f'{equal}/{len(ours)}':>9}{found:>7.3f}{avoided:>9.3f}{rates[loop]:>7.1f}"
            )
    return f1


def _snippets(texts: list[str | None], entries: list[dict[str, Any]]) -> tuple[float, float]:
    found = [s in (t or "") for t, e in zip(texts, entries, strict=True) for s in e["with"]]
    avoided = [
        s not in (t or "") for t, e in zip(texts, entries, strict=True) for s in e["without"]
    ]
    return sum(found) / max(len(found), 1), sum(avoided) / max(len(avoided), 1)


def result_rows(rates: dict[str, float], f1: dict[tuple[bool, str], float]) -> list[Row]:
    """The contract rows: the stage against the bare loop, speed and F1."""
    peer = "trafilatura.extract loop"
    return [
        row("extract, Ray task path (SIGALRM limit)", rates["main"], rates["bare"],
            peer_name=peer, unit="pages/s (wall)"),
        row("extract, actor-pool path (child-process limit)", rates["thread"], rates["bare"],
            peer_name=peer, unit="pages/s (wall)"),
        row("extract, Ray task path, CPU time", None, None, peer_name=peer,
            ratio=rates["cpu_main_ratio"], unit="ratio of pages per CPU second"),
        *(
            row(f"web/aeb token F1, favor_precision={precision}", f1[precision, "ours"],
                f1[precision, "bare"], peer_name=peer, unit="macro F1")
            for precision in (True, False)
        ),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the web/ folder")
    parser.add_argument("--limit", type=int, default=None, help="pages per corpus")
    parser.add_argument("--rounds", type=int, default=2, help="timing rounds (best of)")
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.rounds = min(args.limit or 6, 6), 1
    if not all((args.data / corpus).is_dir() for corpus in CORPORA):
        print(f"skipped: ../shared/data/web not found ({args.data})")
        write_json(args.json, "extract", [], [f"skipped: {args.data} not found"])
        return 0
    pages = load_pages(args.data, args.limit)
    rates = speed(pages, ExtractConfig(), args.rounds)
    f1 = quality(pages, args.data)
    notes = [f"{len(pages)} pages (aeb, trafilatura, readability), {args.rounds} timing rounds"]
    write_json(args.json, "extract", result_rows(rates, f1), notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
