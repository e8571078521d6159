"""Our tokenize stage against a bare ``Tokenizer.encode_batch`` on the same text.

Corpus: ``../shared/data`` books (``long/``), source code (``code/``), mathematics and
docs (``stem/``) and web article text (``web/aeb`` ground truth), with the real GPT-NeoX
byte-level BPE (``tokenizers/gpt-neox.json``). Each round times, on the same batches of
``--batch-rows`` documents:

* ``encode_batch``: the bare call the issue names as the reference (returns offsets too),
* ``encode_batch_fast``: the bare call without offsets (what the stage uses when present),
* ``stage``: ``Tokenize.__call__`` on a ``pa.Table``: encoding, the end-of-document
  token, the list<uint32> column and the kept columns,

and prints tokens/s (best of ``--rounds``) and the ratios stage / bare. ``--ray`` adds
the whole distributed path (curated shards on disk -> actor pool -> tokenized shards on
disk), timed after Ray has started, as a ratio to the bare call on one process.

    python -m bench.tokenizer_bench [--data DIR] [--max-mb 8] [--rounds 3] [--ray]
                                    [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from bench.contract import add_contract_arguments, row, write_json
from stages.tokens import Tokenize, TokenizeConfig

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
TEXT_SUFFIXES = {".txt", ".tex", ".rst", ".py", ".go", ".rs", ".c", ".h", ".ts"}


def load_corpus(data: Path, max_bytes: int | None = None) -> pa.Table:
    """Documents of the shared corpus as a curated-like table (id, source, format, text),
    interleaved by kind so a byte cap keeps every kind."""
    kinds: dict[str, list[tuple[str, str, str]]] = {"books": [], "code": [], "stem": [], "web": []}
    for path in sorted((data / "long").glob("*.txt")):
        kinds["books"].append((f"long/{path.name}", "text", path.read_text("utf-8", "replace")))
    for folder, kind, fmt in (("code", "code", "code"), ("stem", "stem", "text")):
        for path in sorted((data / folder).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES:
                text = path.read_text("utf-8", "replace")
                kinds[kind].append((str(path.relative_to(data)), fmt, text))
    truth = json.loads((data / "web" / "aeb" / "ground-truth.json").read_text())
    for key in sorted(truth):
        kinds["web"].append((f"web/aeb/{key}", "html", truth[key]["articleBody"]))
    rows, used = [], 0
    queues = [list(reversed(v)) for v in kinds.values()]
    while any(queues):
        for queue in queues:
            if queue and (max_bytes is None or used < max_bytes):
                rows.append(queue.pop())
                used += len(rows[-1][2].encode())
            elif queue:
                queue.clear()
    return pa.table(
        {
            "id": [f"doc{i}" for i in range(len(rows))],
            "source": [r[0] for r in rows],
            "format": [r[1] for r in rows],
            "text": [r[2] for r in rows],
        }
    )


def require_data(data: Path, bench: str | None = None, json_path: Path | None = None) -> None:
    """Exit (status 0) with a message when the shared corpus is absent; with ``json_path``
    the skip is recorded there as the contract's notes."""
    if not (data / "tokenizers" / "gpt-neox.json").exists():
        print(f"skipped: {data} not found (the shared corpus lives beside the project)")
        if bench is not None:
            write_json(json_path, bench, [], [f"skipped: {data} not found"])
        sys.exit(0)


def _interleaved(functions: dict, rounds: int) -> dict:
    """Per function: the best tokens/s over ``rounds`` and its time in every round. The
    functions take turns inside each round, so a change in machine load hits them alike,
    and ratios are taken round by round (the median of those is what ``main`` prints)."""
    results: dict[str, dict] = {name: {"times": []} for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            tokens = function()
            results[name]["times"].append(time.perf_counter() - started)
            results[name]["tokens"] = tokens
    for result in results.values():
        result["tokens_per_s"] = result["tokens"] / min(result["times"])
    return results


def median_ratio(results: dict, name: str, reference: str) -> float:
    """Median over rounds of (reference time / name time): throughput ratio name/reference."""
    pairs = zip(results[reference]["times"], results[name]["times"], strict=True)
    return statistics.median(ref / ours for ref, ours in pairs)


def bench_in_process(table: pa.Table, tokenizer_path: Path, batch_rows: int, rounds: int) -> dict:
    stage = Tokenize(TokenizeConfig(tokenizer_path=str(tokenizer_path), batch_rows=batch_rows))
    texts = table.column("text").to_pylist()
    batches = [texts[i : i + batch_rows] for i in range(0, len(texts), batch_rows)]

    def bare(method: str):
        call = getattr(stage.tokenizer, method)
        return lambda: sum(
            len(e.ids) + 1 for b in batches for e in call(b, add_special_tokens=False)
        )

    def ours():
        return int(pa.compute.sum(stage(table).column("n_tokens")).as_py())

    functions = {
        "encode_batch": bare("encode_batch"),
        "encode_batch_fast": bare("encode_batch_fast"),
        "stage": ours,
    }
    return _interleaved(functions, rounds)


def bench_ray(table: pa.Table, tokenizer_path: Path, shards: int) -> dict:
    """The distributed path on ``shards`` curated shards, Ray start-up excluded."""
    from pipeline.runner import init_ray
    from pipeline.shards import resolve_filesystem, write_json_atomic, write_parquet_atomic
    from pipeline.token_runner import run_tokenize
    from pipeline.tokenizing import TokenizeRunConfig

    root = Path(tempfile.mkdtemp(prefix="tokbench-"))
    filesystem, _ = resolve_filesystem(str(root))
    entries = []
    step = -(-table.num_rows // shards)
    for number in range(shards):
        file = f"docs/shard-{number:05d}.parquet"
        part = table.slice(number * step, step)
        entries.append({"file": file, **write_parquet_atomic(filesystem, str(root / file), part)})
    write_json_atomic(filesystem, str(root / "manifest.json"), {"shards": entries})
    config = TokenizeRunConfig(
        curated_dir=str(root),
        output_dir=str(root / "tokenized"),
        tokenizer=TokenizeConfig(tokenizer_path=str(tokenizer_path)),
    )
    init_ray(None)
    started = time.perf_counter()
    result = run_tokenize(config)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "tokens": result.manifest["tokens"],
        "tokens_per_s": result.manifest["tokens"] / seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--max-mb", type=float, default=8.0, help="text to tokenize (MB)")
    parser.add_argument("--batch-rows", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ray", action="store_true", help="also time the actor-pool path")
    parser.add_argument("--shards", type=int, default=4, help="curated shards for --ray")
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.max_mb, args.rounds = min(args.max_mb, 0.5), 1
    require_data(args.data, "tokenizer", args.json)
    tokenizer = args.data / "tokenizers" / "gpt-neox.json"
    table = load_corpus(args.data, int(args.max_mb * 1e6))
    megabytes = sum(len(t.encode()) for t in table.column("text").to_pylist()) / 1e6
    print(f"corpus: {table.num_rows} documents, {megabytes:.1f} MB, tokenizer {tokenizer.name}")
    results = bench_in_process(table, tokenizer, args.batch_rows, args.rounds)
    for name, r in results.items():
        print(f"  {name:<18} {r['tokens']:>10,} tokens  {r['tokens_per_s']:>12,.0f} tokens/s")
    rows = []
    for name in ("encode_batch", "encode_batch_fast"):
        ratio = median_ratio(results, "stage", name)
        print(f"  ratio stage / {name + ':':<19} {ratio:.3f} (median of {args.rounds} rounds)")
        rows.append(
            row(f"tokenize stage vs bare {name}", results["stage"]["tokens_per_s"],
                results[name]["tokens_per_s"], peer_name=f"tokenizers {name}", ratio=ratio,
                unit="tokens/s (best round; ratio: median of rounds)")
        )  # fmt: skip
    if args.ray:
        distributed = bench_ray(table, tokenizer, args.shards)
        print(
            f"  ray actor pool     {distributed['tokens']:>10,} tokens  "
            f"{distributed['tokens_per_s']:>12,.0f} tokens/s (shards read and written, "
            f"{args.shards} shards)"
        )
        print(
            "  ratio ray / encode_batch:        "
            f"{distributed['tokens_per_s'] / results['encode_batch']['tokens_per_s']:.3f}"
        )
        rows.append(
            row("tokenize on Ray (shards in and out) vs bare encode_batch",
                distributed["tokens_per_s"], results["encode_batch"]["tokens_per_s"],
                peer_name="tokenizers encode_batch", unit="tokens/s")
        )  # fmt: skip
    notes = [f"{table.num_rows} documents, {megabytes:.1f} MB, GPT-NeoX BPE, {args.rounds} rounds"]
    write_json(args.json, "tokenizer", rows, notes)


if __name__ == "__main__":
    main()
