"""Packed rows into training arrays, with numpy and pyarrow only (no torch), so that
Ray Data workers (``ray_stream.py``) and the ``TokenStream`` share one implementation.

``RowTable`` holds a phase's (or a block's) rows as zero-copy views of the Arrow
buffers, plus a small segment table: for each row its documents' lengths and domains
and, when the row is not full, one padding segment. A batch of any rows then takes a
handful of vectorised numpy calls, one pass per output array (positions, segment index
and domains are run-length expansions of the segment table); the only per-row step is
copying the row's tokens into the int32 batch array. See ``token_stream.py`` for what
each array means.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model_hooks.shard_format import PhaseManifest, open_shard

IGNORE_INDEX = -100  # torch's cross_entropy default: no target here
ARRAY_KEYS = ("tokens", "targets", "loss_mask", "token_mask", "positions", "doc_index",
              "domain_ids")  # fmt: skip


def domain_vocabulary(manifests: Sequence[PhaseManifest], dirs: Sequence[Path]) -> list[str]:
    """Domain names in order of first appearance in the manifests; a phase whose manifest
    lists none contributes the sorted names found in its shards."""
    names: dict[str, None] = {}
    for manifest, path in zip(manifests, dirs, strict=True):
        listed = manifest.domains
        if not listed:
            found: set[str] = set()
            for shard in manifest.shards:
                column = open_shard(path / shard.file).column("domains")
                found.update(column.combine_chunks().flatten().unique().to_pylist())
            listed = sorted(found)
        names.update(dict.fromkeys(listed))
    return list(names)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + c)`` for each (s, c), without a Python loop."""
    ends = counts.cumsum()
    out = (starts + counts - ends).repeat(counts)
    out += np.arange(len(out))
    return out


class RowTable:
    """Packed rows as numpy views plus a segment table (length, domain, padding flag and
    index within its row per segment, the padding after a row's documents being a
    segment of its own), so that a batch of any rows is built with a handful of
    vectorised numpy calls, one pass per output array."""

    def __init__(
        self, batches: Iterable[pa.RecordBatch], seq_len: int, pad_id: int, vocab: list[str]
    ) -> None:
        self.seq_len, self.pad_id, T = seq_len, pad_id, seq_len
        value_set = pa.array(vocab, pa.string())
        self.chunk_tokens: list[np.ndarray] = []  # (rows, T) int32/uint16 views (the map)
        rows, lens, doms, pads, counts = [], [], [], [], []
        for batch in batches:
            if batch.num_rows == 0:
                continue
            tok = batch.column("tokens")
            offsets = tok.offsets.to_numpy()
            if np.any(np.diff(offsets) != T):
                raise ValueError(f"packed rows must hold exactly seq_len={T} tokens")
            flat = tok.flatten().to_numpy(zero_copy_only=True)
            # uint32 ids below 2**31 read as int32 unchanged; no copy (embeddings take int32);
            # uint16 ids widen in the one copy into the batch.
            flat = flat if flat.dtype == np.uint16 else flat.view(np.int32)
            self.chunk_tokens.append(flat.reshape(batch.num_rows, T))
            rows.append(batch.num_rows)
            parts = self._segments(batch, value_set)
            for out, part in zip((lens, doms, pads, counts), parts, strict=True):
                out.append(part)
        rows_C = np.asarray(rows, dtype=np.intp)
        self._rows = int(rows_C.sum())
        # Row r lives in chunk row_chunk[r] at row_local[r]; the virtual row `rows` is the
        # dummy row (all padding) that ids of -1 point to.
        self.row_chunk = np.append(np.repeat(np.arange(len(rows_C)), rows_C), -1)
        local_R = np.arange(self._rows) - np.repeat(rows_C.cumsum() - rows_C, rows_C)
        self.row_local = np.append(local_R, 0)
        nseg_R = np.concatenate([*counts, [1]]).astype(np.intp)
        self.row_nseg = nseg_R
        self.row_first = np.cumsum(nseg_R) - nseg_R
        self.seg_len = np.concatenate([*lens, [T]]).astype(np.intp)
        self.seg_dom = np.concatenate([*doms, [0]]).astype(np.int32)
        self.seg_real = ~np.concatenate([*pads, [True]]).astype(bool)
        self.seg_local = (np.arange(len(self.seg_len)) - np.repeat(self.row_first, nseg_R)).astype(
            np.int32
        )
        self._flat_arange = np.arange(0, dtype=np.int32)

    @property
    def rows(self) -> int:
        return self._rows

    def _segments(self, batch: pa.RecordBatch, value_set: pa.Array) -> tuple[np.ndarray, ...]:
        T = self.seq_len
        cu = batch.column("cu_seqlens")
        cu_off = cu.offsets.to_numpy() - cu.offsets[0].as_py()
        cu_val = cu.flatten().to_numpy().astype(np.int64)
        docs_R = np.diff(cu_off) - 1
        diffs = np.diff(cu_val)
        keep = np.ones(len(diffs), dtype=bool)
        keep[cu_off[1:-1] - 1] = False  # the jumps from one row's end to the next row's 0
        doc_len = diffs[keep]
        dom = pc.index_in(batch.column("domains").flatten(), value_set=value_set)
        if dom.null_count:
            raise ValueError("a packed row names a domain missing from the manifest's domains")
        used_R = cu_val[cu_off[1:] - 1]
        pad_R = used_R < T
        counts_R = docs_R + pad_R
        first_R = np.cumsum(counts_R) - counts_R
        G = int(counts_R.sum())
        seg_len, seg_dom, seg_pad = np.empty(G, np.int64), np.zeros(G, np.int64), np.zeros(G, bool)
        doc_at = _ranges(first_R, docs_R)
        seg_len[doc_at], seg_dom[doc_at] = doc_len, dom.to_numpy(zero_copy_only=False)
        pad_at = (first_R + docs_R)[pad_R]
        seg_len[pad_at], seg_pad[pad_at] = T - used_R[pad_R], True
        return seg_len, seg_dom, seg_pad, counts_R

    def _arange(self, n: int) -> np.ndarray:
        """0..n-1 as int32, kept between batches (read-only use)."""
        if len(self._flat_arange) < n:
            self._flat_arange = np.arange(n, dtype=np.int32)
        return self._flat_arange[:n]

    def batch(self, rows_B: np.ndarray) -> dict[str, np.ndarray]:
        """Training arrays for these row ids (-1: a dummy row of padding): (B, T), and
        ``cu_seqlens`` over the flattened B*T tokens, ``sample_index`` (B,).

        ``tokens``, ``positions``, ``doc_index``, ``domain_ids`` are int32 (an embedding
        and RoPE take them as they are), ``targets`` int64 (``cross_entropy`` wants it)."""
        B, T = len(rows_B), self.seq_len
        rows_B = np.asarray(rows_B, dtype=np.int64)
        ids_B = np.where(rows_B < 0, self._rows, rows_B)
        nseg_B = self.row_nseg[ids_B]
        seg_S = _ranges(self.row_first[ids_B], nseg_B)
        len_S = self.seg_len[seg_S]
        end_S = len_S.cumsum()  # a row's segments fill it: these are flat offsets
        last_S = end_S - 1
        tokens_BT = np.empty((B, T), np.int32)
        rows = zip(self.row_chunk[ids_B].tolist(), self.row_local[ids_B].tolist(), strict=True)
        for b, (chunk, local) in enumerate(rows):  # B row copies, the only per-row step
            tokens_BT[b] = self.chunk_tokens[chunk][local] if chunk >= 0 else self.pad_id
        flat = tokens_BT.reshape(-1)
        targets = np.empty(B * T, np.int64)
        targets[:-1] = flat[1:]
        targets[last_S] = IGNORE_INDEX  # a segment's last token has no next token
        real_S = self.seg_real[seg_S]
        token_mask = real_S.repeat(len_S)
        if not real_S.all():  # no targets in the padding
            pad_S = ~real_S
            targets[_ranges(end_S[pad_S] - len_S[pad_S], len_S[pad_S])] = IGNORE_INDEX
        loss_mask = token_mask.copy()
        loss_mask[last_S] = False
        positions = (end_S - len_S).astype(np.int32).repeat(len_S)
        np.subtract(self._arange(B * T), positions, out=positions)
        cu_seqlens = np.empty(len(seg_S) + 1, np.int32)
        cu_seqlens[0], cu_seqlens[1:] = 0, end_S
        return {
            "tokens": tokens_BT,
            "targets": targets.reshape(B, T),
            "loss_mask": loss_mask.reshape(B, T),
            "token_mask": token_mask.reshape(B, T),
            "positions": positions.reshape(B, T),
            "doc_index": self.seg_local[seg_S].repeat(len_S).reshape(B, T),
            "domain_ids": self.seg_dom[seg_S].repeat(len_S).reshape(B, T),
            "cu_seqlens": cu_seqlens,
            "sample_index": rows_B,
        }
