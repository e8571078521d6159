"""Packed rows into training arrays, with numpy and pyarrow only (no torch), so that
Ray Data workers (``ray_stream.py``) and the ``TokenStream`` share one implementation.

``RowTable`` holds a phase's (or a block's) rows as zero-copy views of the Arrow
buffers, plus a small segment table: for each row its documents' lengths and domains
and, when the row is not full, one padding segment. A batch of any rows then takes a
handful of vectorised numpy calls; the only per-row step is copying the row's tokens
into the int64 batch array. See ``token_stream.py`` for what each array means.
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
    ends = np.cumsum(counts)
    return np.repeat(starts - (ends - counts), counts) + np.arange(ends[-1] if len(ends) else 0)


class RowTable:
    """Packed rows as numpy views plus a segment table (length, domain, padding flag per
    segment, the padding after a row's documents being a segment of its own), so that a
    batch of any rows is built with a handful of vectorised numpy calls."""

    def __init__(
        self, batches: Iterable[pa.RecordBatch], seq_len: int, pad_id: int, vocab: list[str]
    ) -> None:
        self.seq_len, self.pad_id, T = seq_len, pad_id, seq_len
        value_set = pa.array(vocab, pa.string())
        self.chunk_tokens: list[np.ndarray] = []  # (rows, T) uint32 views into the map
        rows, lens, doms, pads, counts = [0], [], [], [], []
        for batch in batches:
            if batch.num_rows == 0:
                continue
            tok = batch.column("tokens")
            offsets = tok.offsets.to_numpy()
            if np.any(np.diff(offsets) != T):
                raise ValueError(f"packed rows must hold exactly seq_len={T} tokens")
            flat = tok.flatten().to_numpy(zero_copy_only=True)
            self.chunk_tokens.append(flat.reshape(batch.num_rows, T))
            rows.append(batch.num_rows)
            parts = self._segments(batch, value_set)
            for out, part in zip((lens, doms, pads, counts), parts, strict=True):
                out.append(part)
        self.chunk_start = np.cumsum(rows)
        # One trailing all-padding segment serves the dummy rows (row id -1).
        self.seg_len = np.concatenate([*lens, [T]]).astype(np.int64)
        self.seg_dom = np.concatenate([*doms, [0]]).astype(np.int64)
        self.seg_pad = np.concatenate([*pads, [True]]).astype(bool)
        self.row_seg = np.concatenate([[0], np.cumsum(np.concatenate([*counts, []]))]).astype(
            np.int64
        )

    @property
    def rows(self) -> int:
        return int(self.chunk_start[-1])

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

    def batch(self, rows_B: np.ndarray) -> dict[str, np.ndarray]:
        """Training arrays for these row ids (-1: a dummy row of padding): (B, T), and
        ``cu_seqlens`` over the flattened B*T tokens, ``sample_index`` (B,)."""
        B, T = len(rows_B), self.seq_len
        dummy_B = rows_B < 0
        safe_B = np.where(dummy_B, 0, rows_B)
        first_B, nseg_B = self.row_seg[safe_B], self.row_seg[safe_B + 1] - self.row_seg[safe_B]
        if dummy_B.any():  # the trailing all-padding segment
            first_B[dummy_B], nseg_B[dummy_B] = len(self.seg_len) - 1, 1
        seg_S = _ranges(first_B, nseg_B)
        len_S, pad_S = self.seg_len[seg_S], self.seg_pad[seg_S]
        end_S = np.cumsum(len_S)
        start_S = end_S - len_S
        # tokens and targets share one copy of the rows: targets are the shifted view's
        # copy, with IGNORE_INDEX where no next token of the same segment exists.
        buffer = np.empty(B * T + 1, np.int64)
        tokens_BT = buffer[:-1].reshape(B, T)
        chunk_B = np.searchsorted(self.chunk_start, safe_B, side="right") - 1
        local_B = safe_B - self.chunk_start[chunk_B]
        for b in range(B):
            tokens_BT[b] = self.pad_id if dummy_B[b] else self.chunk_tokens[chunk_B[b]][local_B[b]]
        targets = buffer[1:].copy()
        targets[end_S - 1] = IGNORE_INDEX
        if pad_S.any():
            targets[_ranges(start_S[pad_S], len_S[pad_S])] = IGNORE_INDEX
        token_mask = np.repeat(~pad_S, len_S)
        loss_mask = token_mask.copy()
        loss_mask[end_S - 1] = False  # the last token of a segment has no next token
        positions = np.arange(B * T)
        positions -= np.repeat(start_S, len_S)
        local_S = np.arange(len(seg_S)) - np.repeat(np.cumsum(nseg_B) - nseg_B, nseg_B)
        return {
            "tokens": tokens_BT,
            "targets": targets.reshape(B, T),
            "loss_mask": loss_mask.reshape(B, T),
            "token_mask": token_mask.reshape(B, T),
            "positions": positions.reshape(B, T),
            "doc_index": np.repeat(local_S, len_S).reshape(B, T),
            "domain_ids": np.repeat(self.seg_dom[seg_S], len_S).reshape(B, T),
            "cu_seqlens": np.concatenate([[0], end_S]).astype(np.int32),
            "sample_index": rows_B.astype(np.int64),
        }
