"""How fast the token stream serves batches, against reading the same shards with raw
pyarrow memory mapping, and against what the trainer consumes.

Shards are made in a temporary folder: real text tokenized with the GPT-NeoX BPE from
``../shared/data`` when it is there (books, code and STEM as three domains), random
tokens otherwise. Both readers open the shards afresh (memory map) and read the same
rows in the same (seeded, shuffled) order:

* raw: ``pa.memory_map`` + ``pa.ipc.open_file``, each row's tokens copied into a
  (B, T) tensor of the stream's token dtype (int32): the least any loader must do for
  an embedding lookup;
* stream: ``TokenStream`` batches, with targets, loss mask, token mask, positions,
  segment index, domain ids and cu_seqlens on top;
* trainer: ``train_step`` of a tiny LongCat-style model on the stream's batches.

Times are CPU seconds of this one-thread process (best of ``--repeat``), so that the
load of a shared machine does not decide the ratios.

    python -m bench.stream [--seq-len 2048] [--batch-size 8] [--tokens 4000000] [--quick]
                           [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from bench.contract import add_contract_arguments, row, write_json
from model_hooks.model import Model, ModelConfig
from model_hooks.optimizer import build_optimizer
from model_hooks.shard_format import read_manifest
from model_hooks.synthetic import write_packed_phase
from model_hooks.token_stream import TokenStream
from model_hooks.train_config import TrainConfig
from model_hooks.train_step import train_step

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def best_seconds(function: Callable[[], object], repeat: int) -> float:
    """Best of ``repeat`` runs, in CPU seconds of this process: on a shared machine the
    wall time follows the load, the CPU time of a one-thread reader hardly does."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return min(times)


def documents(tokens: int, seed: int) -> tuple[list[tuple[np.ndarray, str]], int, str]:
    """(documents, vocab size, where they came from), about ``tokens`` tokens in all."""
    rng = np.random.default_rng(seed)
    tokenizer_file = DATA / "tokenizers" / "gpt-neox.json"
    if tokenizer_file.exists():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        sources = {"books": DATA / "long", "code": DATA / "code", "stem": DATA / "stem"}
        pieces = {  # documents of at most 24k characters (the books are long)
            domain: [
                text[i : i + 24_000]
                for f in sorted(root.rglob("*"))
                if f.is_file()
                for text in [f.read_text("utf-8", "replace")]
                for i in range(0, len(text), 24_000)
            ]
            for domain, root in sources.items()
        }
        texts, chars = [], 0  # round robin over the domains, about 4 characters a token
        for group in itertools.zip_longest(*pieces.values()):
            for domain, text in zip(pieces, group, strict=True):
                if text and chars < 4 * tokens:
                    texts.append((text, domain))
                    chars += len(text)
        encoded = tokenizer.encode_batch_fast([t for t, _ in texts])
        docs = [(np.asarray(e.ids, np.uint32), d) for e, (_, d) in zip(encoded, texts, strict=True)]
        docs = [docs[i] for i in rng.permutation(len(docs)) if len(docs[i][0])]
        return docs, tokenizer.get_vocab_size(), "GPT-NeoX BPE over ../shared/data"
    lengths = np.clip(rng.lognormal(6.0, 1.2, size=tokens // 200), 16, 20_000).astype(int)
    lengths = lengths[np.cumsum(lengths) <= tokens]
    domains = ("web", "code", "math")
    docs = [
        (rng.integers(1, 50_000, n, dtype=np.uint32), domains[i % 3]) for i, n in enumerate(lengths)
    ]
    return docs, 50_000, "random tokens (no ../shared/data)"


def _mapped_tables(phase: Path) -> list[pa.Table]:
    manifest = read_manifest(phase)
    return [
        pa.ipc.open_file(pa.memory_map(str(phase / s.file), "r")).read_all()
        for s in manifest.shards
    ]


TOKEN_DTYPE = np.int32  # what TokenStream batches carry (checked in main)


def raw_copy(phase: Path, order: np.ndarray, batch_size: int) -> int:
    """The floor: memory-map the shards, take numpy views of the token lists and copy
    the rows, in ``order``, into (B, T) tensors of the stream's token dtype. Tokens
    only."""
    T = read_manifest(phase).seq_len
    views = [
        chunk.flatten().to_numpy(zero_copy_only=True).reshape(-1, T)
        for table in _mapped_tables(phase)
        for chunk in table.column("tokens").chunks
    ]
    starts = np.cumsum([0] + [len(v) for v in views])
    tokens = 0
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        chunk = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((len(rows), T), TOKEN_DTYPE)
        for b, (c, r) in enumerate(zip(chunk, rows - starts[chunk], strict=True)):
            out[b] = views[c][r]
        tokens += torch.from_numpy(out).numel()
    return tokens


def raw_take(phase: Path, order: np.ndarray, batch_size: int) -> int:
    """The plain pyarrow API: ``Table.take`` of the batch's rows from the memory-mapped
    shards, tokens to a tensor of the stream's token dtype, cu_seqlens and domains to
    Python lists."""
    table = pa.concat_tables(_mapped_tables(phase))
    tokens = 0
    for i in range(0, len(order), batch_size):
        rows = table.take(order[i : i + batch_size])
        flat = rows.column("tokens").combine_chunks().flatten().to_numpy()
        tokens += torch.from_numpy(flat.astype(TOKEN_DTYPE).reshape(rows.num_rows, -1)).numel()
        rows.column("cu_seqlens").to_pylist(), rows.column("domains").to_pylist()
    return tokens


def stream_batches(phase: Path, batch_size: int) -> int:
    return sum(b["tokens"].numel() for b in TokenStream(phase, batch_size=batch_size))


def trainer_tokens_per_second(phase: Path, batch_size: int, steps: int, vocab: int) -> float:
    """Tokens per second of train_step on the stream's batches (the default tiny model,
    CPU, R_g not measured). One row per step: the (B*T, vocab) fp32 logits of a real
    vocabulary would not fit many rows."""
    model = Model(ModelConfig(vocab_size=vocab))
    cfg = TrainConfig(out_dir="unused", steps=steps + 1, device="cpu", grad_ratio_every=0)
    opt = build_optimizer(model, cfg)
    stream = TokenStream(phase, batch_size=batch_size, epochs=100)
    train_step(model, opt, next(stream), cfg, 0)  # warm-up
    start, tokens = time.process_time(), 0
    for step in range(1, steps + 1):
        batch = next(stream)
        train_step(model, opt, batch, cfg, step)
        tokens += batch["tokens"].numel()
    return tokens / (time.process_time() - start)


def contract_rows(result: dict) -> list[dict]:
    """The bench JSON rows: tokens per second, ours against each peer (> 1: ours faster)."""
    stream, unit = result["stream_tokens_per_s"], "tokens/s (CPU time of one thread)"
    return [
        row("stream vs raw mmap copy of the tokens", stream, result["raw_copy_tokens_per_s"],
            peer_name="pyarrow memory_map + numpy row copy", unit=unit),
        row("stream vs pyarrow Table.take", stream, result["raw_take_tokens_per_s"],
            peer_name="pyarrow Table.take", unit=unit),
        row("stream vs trainer consumption (tiny model, CPU)", stream,
            result["trainer_tokens_per_s"], peer_name="model_hooks.train_step.train_step",
            unit=unit),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=4_000_000, help="corpus size")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=2)
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.seq_len, args.tokens, args.repeat, args.train_steps = 256, 100_000, 1, 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        docs, vocab, origin = documents(args.tokens, seed=0)
        phase = Path(tmp) / "phase"
        manifest = write_packed_phase(phase, docs, args.seq_len, vocab, rows_per_shard=256)
        first = next(TokenStream(phase, batch_size=args.batch_size))
        if first["tokens"].numpy().dtype != TOKEN_DTYPE:
            raise RuntimeError(
                f"the stream's tokens are {first['tokens'].dtype}: update TOKEN_DTYPE"
            )
        order = TokenStream(phase).order(0, 0)
        tokens = manifest.rows * args.seq_len
        readers = {
            "raw_copy": lambda: raw_copy(phase, order, args.batch_size),
            "raw_take": lambda: raw_take(phase, order, args.batch_size),
            "stream": lambda: stream_batches(phase, args.batch_size),
        }
        seconds = {name: math.inf for name in readers}
        for _ in range(args.repeat):  # interleaved: load changes hit every reader alike
            for name, read in readers.items():
                seconds[name] = min(seconds[name], best_seconds(read, 1))
        trainer = trainer_tokens_per_second(phase, 1, args.train_steps, vocab)
    stream_rate = tokens / seconds["stream"]
    result = {
        "data": origin,
        "rows": manifest.rows,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "padding_fraction": round(manifest.padding_fraction, 4),
        **{f"{name}_tokens_per_s": round(tokens / s) for name, s in seconds.items()},
        "stream_over_raw_copy": round(seconds["raw_copy"] / seconds["stream"], 3),
        "stream_over_raw_take": round(seconds["raw_take"] / seconds["stream"], 3),
        "trainer_tokens_per_s": round(trainer),
        "stream_over_trainer": round(stream_rate / trainer, 1),
    }
    print(json.dumps(result, indent=2))
    notes = [
        f"data: {origin}; {manifest.rows} rows of seq_len {args.seq_len}, batch_size "
        f"{args.batch_size}, padding fraction {result['padding_fraction']}",
        "raw copy: the same rows in the same order into (B, T) arrays of the stream's token "
        "dtype (int32); the stream also builds targets, loss and token masks, positions, "
        "segment index, domain ids and cu_seqlens",
        "goal: stream / raw copy >= 0.5",
    ]
    write_json(args.json, "stream", contract_rows(result), notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
