"""Best-fit-decreasing packing against naive concatenate-and-chunk, at 8k, 32k and 128k.

Documents: ``../shared/data`` books (``long/``, both over 128k tokens), source code
(``code/``), mathematics and docs (``stem/``) and web article text (``web/aeb`` ground
truth), tokenized with the GPT-NeoX BPE plus an end-of-document token. The stream is
what the mixer produces: the corpus repeated in seeded shuffled epochs until it holds
``--stream-tokens`` tokens, cut into windows of ``window_sequences * seq_len`` tokens.

For every ``seq_len`` and window size the packer (``stages/pack.py``, as the pipeline
runs it per window) reports padding fraction, fraction of documents split (only those
longer than ``seq_len``), rows per second, and the window's token memory (the units it
holds, 4 bytes a token; the rows it builds need about as much again). The baseline
concatenates the same stream and cuts it every ``seq_len`` tokens.

    python -m bench.pack [--data DIR] [--seq-lens 8192 32768 131072]
                         [--windows 16 64 256 1024] [--stream-tokens 128M] [--max-mb 16]
                         [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.contract import Row, add_contract_arguments, row, write_json
from bench.tokenizer_bench import DEFAULT_DATA, load_corpus, require_data
from pipeline.mix_config import parse_tokens
from stages.pack import concatenate_and_chunk, pack_pieces, split_into_pieces
from stages.tokens import Tokenize, TokenizeConfig

Document = tuple[np.ndarray, str, str]  # tokens, id, domain


def tokenized_documents(data: Path, max_bytes: int) -> list[Document]:
    table = load_corpus(data, max_bytes)
    stage = Tokenize(TokenizeConfig(tokenizer_path=str(data / "tokenizers" / "gpt-neox.json")))
    tokens = stage(table).column("tokens").combine_chunks()
    offsets, values = tokens.offsets.to_numpy(), tokens.values.to_numpy()
    domains = [source.split("/")[0] for source in table.column("source").to_pylist()]
    return [
        (values[offsets[i] : offsets[i + 1]], f"doc{i}", domains[i]) for i in range(len(domains))
    ]


def stream(documents: list[Document], total_tokens: int, seed: int = 0) -> list[Document]:
    """Seeded shuffled epochs of the corpus until ``total_tokens``."""
    rng = np.random.default_rng(seed)
    out: list[Document] = []
    used = 0
    while used < total_tokens:
        for index in rng.permutation(len(documents)):
            out.append(documents[index])
            used += len(documents[index][0])
            if used >= total_tokens:
                break
    return out


def windows(documents: list[Document], window_tokens: int) -> list[list[Document]]:
    """Consecutive documents by the plan's rule: window = tokens before // window_tokens."""
    lengths = np.array([len(d[0]) for d in documents], np.int64)
    numbers = (np.cumsum(lengths) - lengths) // window_tokens
    cuts = np.flatnonzero(np.diff(numbers)) + 1
    return [documents[a:b] for a, b in zip([0, *cuts], [*cuts, len(documents)], strict=True)]


def bench_bfd(documents: list[Document], seq_len: int, window_sequences: int) -> dict:
    rows = used = splits = 0
    started = time.perf_counter()
    for window in windows(documents, window_sequences * seq_len):
        pieces = [p for t, d, m in window for p in split_into_pieces(t, d, m, 0, seq_len)]
        table = pack_pieces(pieces, seq_len, pad_id=0, seed=[0])
        rows += table.num_rows
        used += int(np.asarray(table.column("n_tokens").to_numpy()).sum())
        splits += sum(len(t) > seq_len for t, _, _ in window)
    seconds = time.perf_counter() - started
    return {
        "padding": 1 - used / (rows * seq_len),
        "split": splits / len(documents),
        "rows_per_s": rows / seconds,
        "window_mb": window_sequences * seq_len * 4 / 1e6,
    }


def bench_naive(documents: list[Document], seq_len: int) -> dict:
    started = time.perf_counter()
    table, cut = concatenate_and_chunk(documents, seq_len, pad_id=0)
    seconds = time.perf_counter() - started
    used = int(np.asarray(table.column("n_tokens").to_numpy()).sum())
    return {
        "padding": 1 - used / (table.num_rows * seq_len),
        "split": cut / len(documents),
        "rows_per_s": table.num_rows / seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--windows", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--stream-tokens", default="128M", help="tokens per stream (e.g. 64M)")
    parser.add_argument("--max-mb", type=float, default=16.0, help="corpus text to tokenize (MB)")
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.seq_lens, args.windows, args.stream_tokens, args.max_mb = [8192], [16, 64], "4M", 1.0
    require_data(args.data, "pack", args.json)
    documents = tokenized_documents(args.data, int(args.max_mb * 1e6))
    lengths = np.array([len(d[0]) for d in documents])
    print(
        f"corpus: {len(documents)} documents, {lengths.sum():,} tokens"
        f" (median {np.median(lengths):.0f}, max {lengths.max():,});"
        f" stream {args.stream_tokens} tokens of shuffled epochs"
    )
    docs = stream(documents, parse_tokens(args.stream_tokens))
    header = (
        f"{'seq_len':>8} {'method':<22} {'window MB':>9} {'padding':>9} {'split':>7} {'rows/s':>9}"
    )
    print(header)
    rows: list[Row] = []
    for seq_len in args.seq_lens:
        naive = bench_naive(docs, seq_len)
        print(
            f"{seq_len:>8} {'concatenate-and-chunk':<22} {'-':>9} {naive['padding']:>9.4%}"
            f" {naive['split']:>7.2%} {naive['rows_per_s']:>9,.0f}"
        )
        largest = None
        for window in args.windows:
            if window * seq_len * 2 > parse_tokens(args.stream_tokens):
                print(f"{seq_len:>8} {f'BFD window {window}':<22} (stream holds under 2 windows)")
                continue
            bfd = bench_bfd(docs, seq_len, window)
            largest = (window, bfd)
            print(
                f"{seq_len:>8} {f'BFD window {window}':<22} {bfd['window_mb']:>9.1f}"
                f" {bfd['padding']:>9.4%} {bfd['split']:>7.2%} {bfd['rows_per_s']:>9,.0f}"
            )
        if largest is not None:
            rows.extend(contract_rows(seq_len, *largest, naive))
    notes = [
        f"{len(documents)} documents, {lengths.sum():,} tokens, stream {args.stream_tokens};"
        " ours = best-fit-decreasing at the largest window that fits the stream twice"
    ]
    write_json(args.json, "pack", rows, notes)


def contract_rows(seq_len: int, window: int, bfd: dict, naive: dict) -> list[Row]:
    """Packing against concatenate-and-chunk at one ``seq_len``: padding and documents
    split (lower is better, so the ratio is chunk/ours), and rows built per second."""
    peer, where = "concatenate-and-chunk", f"seq_len {seq_len:,}, BFD window {window}"
    return [
        row(f"padding fraction, {where}", bfd["padding"], naive["padding"], peer_name=peer,
            unit="fraction of row tokens", higher_is_better=False),
        row(f"documents split, {where}", bfd["split"], naive["split"], peer_name=peer,
            unit="fraction of documents", higher_is_better=False),
        row(f"rows built, {where}", bfd["rows_per_s"], naive["rows_per_s"], peer_name=peer,
            unit="rows/s (one core)"),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
