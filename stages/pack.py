"""Packing: documents into rows of exactly ``seq_len`` tokens, by best-fit-decreasing.

Ding et al. 2024 ("Fewer Truncations Improve Language Modeling") show that cutting a
concatenated stream into chunks truncates most documents and hurts; packing whole
documents into bins by best-fit-decreasing (BFD) keeps them whole at almost no padding.
Here BFD runs over one *window* of the sample plan at a time (a run of consecutive
planned documents holding about ``window_sequences * seq_len`` tokens), which bounds a
packer's memory to the window and lets windows pack in parallel with identical output.

Rules:

* A document of at most ``seq_len`` tokens is never cut: it lands whole in one row.
* A document longer than ``seq_len`` is cut into pieces of ``seq_len`` tokens (each a
  row of its own) plus the remainder, which is packed like any short document. These
  are the only splits; ``doc_offsets`` says where each piece starts in its document.
* Rows are filled by BFD: pieces in decreasing length (ties in plan order) each go to
  the open row with the least free space that still holds it, or open a new row. What
  stays free at the end of a row is padding (``pad_id``, no attention, no loss).

The output rows follow ``model_hooks/shard_format.py`` exactly (``PACKED_SCHEMA``); the
row order of a window is a seeded shuffle, so length-sorted bins do not reach the
trainer in length order.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from model_hooks.shard_format import PACKED_SCHEMA


@dataclass(frozen=True)
class Piece:
    """A run of one document's tokens that is packed without a cut."""

    tokens: np.ndarray  # uint32
    doc_id: str
    domain: str
    offset: int  # where the piece starts inside its document


@dataclass(frozen=True)
class PackStats:
    rows: int
    tokens: int  # tokens in use
    padding_tokens: int
    documents: int  # plan units packed
    split_documents: int  # units longer than seq_len (cut into pieces)


# One planned unit with its tokens: what a tokenized shard sends to its packing window.
UNITS_SCHEMA = pa.schema(
    [
        ("window", pa.int32()),
        ("unit", pa.int64()),  # position in the phase's plan: fixes the order in a window
        ("id", pa.string()),
        ("domain", pa.string()),
        ("offset", pa.int64()),  # where ``tokens`` starts inside the document
        ("tokens", pa.list_(pa.uint32())),
    ]
)


def slice_units(tokens: pa.ChunkedArray | pa.ListArray, plan: pa.Table) -> pa.Table:
    """The tokens each plan row takes from one tokenized shard (``plan`` holds only rows
    of that shard, with columns unit, window, row, id, domain, token_start, token_end).

    Vectorised: the gather index of every output token is built with one ``np.repeat``,
    so slicing costs the same for a thousand documents or a million."""
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    doc_starts = tokens.offsets.to_numpy()[plan.column("row").to_numpy()]
    starts = doc_starts + plan.column("token_start").to_numpy()
    lengths = plan.column("token_end").to_numpy() - plan.column("token_start").to_numpy()
    out_offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    gather = np.repeat(starts - out_offsets[:-1], lengths) + np.arange(out_offsets[-1])
    values = tokens.values.to_numpy()[gather]
    return pa.table(
        [
            plan.column("window"),
            plan.column("unit"),
            plan.column("id"),
            plan.column("domain"),
            plan.column("token_start"),
            pa.LargeListArray.from_arrays(out_offsets, values).cast(pa.list_(pa.uint32())),
        ],
        schema=UNITS_SCHEMA,
    )


def pack_window(
    units: pa.Table, seq_len: int, pad_id: int, seed: list[int] | None = None
) -> tuple[pa.Table, PackStats]:
    """Pack one window's units (``UNITS_SCHEMA``, any row order) into packed rows."""
    units = units.sort_by("unit")
    tokens = units.column("tokens").combine_chunks()
    offsets = tokens.offsets.to_numpy()
    values = tokens.values.to_numpy()
    pieces: list[Piece] = []
    split = 0
    ids, domains = units.column("id").to_pylist(), units.column("domain").to_pylist()
    for number, start in enumerate(units.column("offset").to_pylist()):
        run = values[offsets[number] : offsets[number + 1]]
        split += len(run) > seq_len
        pieces += split_into_pieces(run, ids[number], domains[number], start, seq_len)
    table = pack_pieces(pieces, seq_len, pad_id, seed)
    return table, pack_stats(table, seq_len, units.num_rows, split)


def split_into_pieces(
    tokens: np.ndarray, doc_id: str, domain: str, offset: int, seq_len: int
) -> list[Piece]:
    """``seq_len``-token pieces of a long document plus its remainder; one piece for a
    document that fits. ``offset`` is where ``tokens`` starts inside the document."""
    return [
        Piece(tokens[start : start + seq_len], doc_id, domain, offset + start)
        for start in range(0, len(tokens), seq_len)
    ] or [Piece(tokens, doc_id, domain, offset)]


def best_fit_decreasing(lengths: np.ndarray, seq_len: int) -> list[list[int]]:
    """Bins (lists of indices into ``lengths``) of total length <= ``seq_len`` each.

    Free space per open bin is kept in a sorted list of ``(free, bin)``, so finding the
    tightest bin is a bisection; full bins leave the list. Deterministic: ties go to the
    earlier piece and the earlier bin."""
    if len(lengths) and int(lengths.max()) > seq_len:
        raise ValueError(f"a piece of {int(lengths.max())} tokens does not fit {seq_len}")
    bins: list[list[int]] = []
    free_list: list[tuple[int, int]] = []
    for piece in np.argsort(-lengths, kind="stable").tolist():
        length = int(lengths[piece])
        at = bisect.bisect_left(free_list, (length, -1))
        if at == len(free_list):
            bins.append([piece])
            number, free = len(bins) - 1, seq_len - length
        else:
            free, number = free_list.pop(at)
            bins[number].append(piece)
            free -= length
        if free > 0:
            bisect.insort(free_list, (free, number))
    return bins


def pack_pieces(
    pieces: list[Piece], seq_len: int, pad_id: int, seed: list[int] | None = None
) -> pa.Table:
    """Pack pieces (none longer than ``seq_len``) into a ``PACKED_SCHEMA`` table."""
    lengths = np.array([len(p.tokens) for p in pieces], dtype=np.int64)
    bins = best_fit_decreasing(lengths, seq_len)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(bins))
        bins = [bins[i] for i in order]
    return rows_table([[pieces[i] for i in members] for members in bins], seq_len, pad_id)


def rows_table(rows: list[list[Piece]], seq_len: int, pad_id: int) -> pa.Table:
    """Build the packed rows: tokens padded to ``seq_len``, boundaries, ids, domains."""
    if len(rows) * seq_len > np.iinfo(np.int32).max:
        raise ValueError("too many tokens for one table; use a smaller packing window")
    flat = np.full(len(rows) * seq_len, pad_id, dtype=np.uint32)
    cu_seqlens: list[list[int]] = []
    for number, row in enumerate(rows):
        bounds = [0]
        for piece in row:
            start = number * seq_len + bounds[-1]
            flat[start : start + len(piece.tokens)] = piece.tokens
            bounds.append(bounds[-1] + len(piece.tokens))
        cu_seqlens.append(bounds)
    offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * seq_len)
    return pa.table(
        [
            pa.ListArray.from_arrays(offsets, pa.array(flat)),
            pa.array(cu_seqlens, pa.list_(pa.int32())),
            pa.array([[p.doc_id for p in row] for row in rows], pa.list_(pa.string())),
            pa.array([[p.domain for p in row] for row in rows], pa.list_(pa.string())),
            pa.array([[p.offset for p in row] for row in rows], pa.list_(pa.int64())),
            pa.array([bounds[-1] for bounds in cu_seqlens], pa.int32()),
        ],
        schema=PACKED_SCHEMA,
    )


def pack_stats(table: pa.Table, seq_len: int, documents: int, split_documents: int) -> PackStats:
    used = int(np.asarray(table.column("n_tokens").to_numpy()).sum()) if table.num_rows else 0
    return PackStats(
        rows=table.num_rows,
        tokens=used,
        padding_tokens=table.num_rows * seq_len - used,
        documents=documents,
        split_documents=split_documents,
    )


def concatenate_and_chunk(
    documents: list[tuple[np.ndarray, str, str]], seq_len: int, pad_id: int
) -> tuple[pa.Table, int]:
    """The naive baseline: all documents back to back, cut every ``seq_len`` tokens (the
    last row padded). Returns the rows and how many documents a cut went through."""
    rows: list[list[Piece]] = [[]]
    used = 0
    cut_documents = 0
    for tokens, doc_id, domain in documents:
        offset = 0
        cut_documents += used + len(tokens) > seq_len
        while offset < len(tokens):
            take = min(seq_len - used, len(tokens) - offset)
            rows[-1].append(Piece(tokens[offset : offset + take], doc_id, domain, offset))
            offset += take
            used += take
            if used == seq_len:
                rows.append([])
                used = 0
    if not rows[-1]:
        rows.pop()
    return rows_table(rows, seq_len, pad_id), cut_documents
