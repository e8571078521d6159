"""The token stream: packed shards (``shard_format.py``) into training batches.

``TokenStream`` is a ``torch.utils.data.IterableDataset`` over one phase's packed
shards, or over a curriculum (several phase folders consumed in order). Shards are
memory-mapped; a row's tokens are read as a numpy view into the map and copied once,
straight into the int32 batch tensor (the only copy of the tokens; an embedding takes
int32 ids, so the narrow type travels to the device as it is).

Order. Phase p, epoch e is a permutation of the phase's rows drawn from
``(seed, p, e)`` only, so the global order never depends on the world size. Each
step consumes one global batch of ``batch_size * world_size`` consecutive positions
of that order; rank r takes positions ``s + r, s + r + W, ...``. At the end of a
phase-epoch the last global batch is shorter: every rank still gets the same number
of rows, padded with dummy rows (all padding, no loss, ``sample_index`` -1), so
data-parallel ranks stay in step. A batch never mixes two phase-epochs. DataLoader
workers take every n-th local batch, so a ``DataLoader(stream, batch_size=None,
num_workers=n)`` yields the same batches in the same order as the stream itself.

State. ``state_dict()`` is ``{version, seed, fingerprint, phase, epoch, sample,
world_size, batch_size}`` (``StreamLoader`` adds ``num_workers``): ``sample`` counts
the global positions of (phase, epoch) consumed so far, the same number on every rank,
so any rank's state will do. The iterator moves the position as it yields (before the
batch leaves), so a DataLoader in the main process, torchdata's ``StatefulDataLoader``
(which asks each worker's copy for its state after every batch) and ``next(stream)``
all save the exact next batch. Inside a DataLoader worker the state also carries
``worker_id``, ``worker_count`` and ``worker_skip`` (batches of the global schedule
that worker passes over before its next one), which is what lets each worker of a
``StatefulDataLoader`` resume exactly where it was. ``merged_state(loader_state)``
folds a ``StatefulDataLoader`` state (every worker's, in any of its two shapes) into
one position, which a stream with another number of workers, world size or batch size
loads. Resuming with any world size, batch size or number of workers continues at the
exact next global position; the layout the state was saved under is kept for the
record (``resumed_from``). The fingerprint (from the shard checksums) rejects a resume
on other data. A plain ``DataLoader`` with workers hands out batches the main
process's stream never saw: call ``stream.mark_consumed(batch)`` on each batch you use
(or on the last one, before saving).

Batch (what ``model_hooks.train`` consumes; (B, T) tensors unless said; ``tokens``,
``positions``, ``doc_index`` and ``domain_ids`` int32, ``targets`` int64 as
``cross_entropy`` wants it): ``tokens``, ``targets`` (the next token of the same
segment, else ``IGNORE_INDEX``),
``loss_mask`` (False on padding and on each segment's last token), ``token_mask``
(False on padding), ``positions`` (restart at 0 per segment and in the padding),
``doc_index`` (segment of each token; the padding is a segment of its own),
``domain_ids`` (into ``domain_names``), ``cu_seqlens`` (int32, boundaries of every
segment, padding included, over the flattened B*T tokens), ``sample_index`` (B,) and
the plain values ``domain_names``, ``phase``, ``phase_index``, ``seq_len``,
``rope_theta`` (from the manifest, None if unset) and ``stream_position``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model_hooks.packed_rows import ARRAY_KEYS, IGNORE_INDEX, RowTable, domain_vocabulary
from model_hooks.shard_format import open_shard, read_manifest

__all__ = ["IGNORE_INDEX", "PhaseInfo", "StreamLoader", "TokenStream", "collate", "merged_state"]
STATE_VERSION = 1


@dataclass(frozen=True)
class PhaseInfo:
    """What the trainer needs to know about one phase, from its manifest."""

    name: str
    path: Path
    seq_len: int
    rope_theta: float | None
    pad_id: int
    vocab_size: int
    rows: int
    tokens: int  # non-padding tokens


Position = tuple[int, int, int]  # phase, epoch, global sample position in that epoch
WORKER_KEYS = ("worker_id", "worker_count", "worker_skip")


class TokenStream(IterableDataset):
    """Resumable, rank-sharded batches over the packed shards of one or more phases.

    ``batch_size`` is the rows per rank per step; None yields single samples (the same
    keys, no batch dimension; see ``collate``; with DataLoader workers, a merged or
    elastic resume needs a batch_size). Each phase is read ``epochs`` times, then the
    next phase starts; the stream ends after the last phase.

    Iterating (``next(stream)``, a for loop, a DataLoader) moves the position that
    ``state_dict()`` saves, so a loop that stops and a new ``iter`` continue where it
    stopped; a new ``iter`` after the last batch starts the curriculum again (a second
    pass), while ``next(stream)`` at the end stays ended (the trainer stops there).
    ``len(stream)`` is the batches (samples without a batch_size) this rank yields in
    one whole pass; ``num_batches()`` counts those left from the position.
    """

    def __init__(
        self,
        phases: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        batch_size: int | None = 8,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epochs: int = 1,
        shuffle: bool = True,
    ) -> None:
        dirs = [phases] if isinstance(phases, str | os.PathLike) else list(phases)
        if not dirs or (batch_size is not None and batch_size < 1) or epochs < 1:
            raise ValueError("need at least one phase, batch_size >= 1 (or None), epochs >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.dirs = [Path(d) for d in dirs]
        self.manifests = [read_manifest(d) for d in self.dirs]
        self.phases = [
            PhaseInfo(m.phase, d, m.seq_len, m.rope_theta, m.pad_id, m.vocab_size, m.rows, m.tokens)
            for m, d in zip(self.manifests, self.dirs, strict=True)
        ]
        for m, d in zip(self.manifests, self.dirs, strict=True):
            if m.vocab_size > np.iinfo(np.int32).max:
                raise ValueError(f"{d}: vocab_size {m.vocab_size} does not fit int32 tokens")
        self.domain_names = domain_vocabulary(self.manifests, self.dirs)
        self.batch_size, self.seed, self.epochs, self.shuffle = batch_size, seed, epochs, shuffle
        self.rank, self.world_size = rank, world_size
        digest = hashlib.sha256()
        for m in self.manifests:
            digest.update("\n".join([m.phase, *(s.sha256 for s in m.shards)]).encode())
        self.fingerprint = int(digest.hexdigest()[:15], 16)
        self._position: Position = (0, 0, 0)
        self._skip = 0  # schedule batches this worker passes over before its next one
        self._worker_state: tuple[int, int, int] | None = None  # a loaded worker's layout
        self._pass_done = False  # this copy iterated to the end: a new iter starts over
        self.resumed_from: dict[str, int] | None = None  # the layout of a loaded state
        self._tables: dict[int, RowTable] = {}
        self._iter: Iterator[dict] | None = None

    def __getstate__(self) -> dict:  # worker processes reopen the maps themselves
        return {**self.__dict__, "_tables": {}, "_iter": None}

    # -- state ---------------------------------------------------------------------------
    def _normalised(self, phase: int, epoch: int, sample: int) -> Position:
        """Roll a finished epoch over to the next epoch or phase."""
        while phase < len(self.phases) and sample >= self.phases[phase].rows:
            phase, epoch, sample = (
                (phase, epoch + 1, 0) if epoch + 1 < self.epochs else (phase + 1, 0, 0)
            )
        return phase, epoch, sample

    def state_dict(self) -> dict[str, int]:
        phase, epoch, sample = self._normalised(*self._position)
        state = {
            "version": STATE_VERSION,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "phase": phase,
            "epoch": epoch,
            "sample": sample,
            "world_size": self.world_size,  # the layout it was saved under (a record:
            "batch_size": self.batch_size or 0,  # the position does not depend on it)
        }
        worker = get_worker_info()
        if worker is not None:  # a DataLoader worker's copy: its place in the round robin
            state |= {"worker_id": worker.id, "worker_count": worker.num_workers,
                      "worker_skip": self._skip}  # fmt: skip
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue at the saved global position, under this stream's own layout.

        Takes this stream's own state, or a ``StatefulDataLoader``'s (merged with
        ``merged_state``, so the new loader may have another number of workers)."""
        if "version" not in state and ("_snapshot" in state or "_num_yielded" in state):
            state = merged_state(state, self)
        want = {"version": STATE_VERSION, "seed": self.seed, "fingerprint": self.fingerprint}
        for key, value in want.items():
            if state.get(key) != value:
                raise ValueError(f"stream state {key}={state.get(key)}, this stream has {value}")
        missing = [k for k in ("phase", "epoch", "sample") if k not in state]
        if missing:
            raise ValueError(f"stream state lacks {', '.join(missing)}")
        self._position = (int(state["phase"]), int(state["epoch"]), int(state["sample"]))
        has_worker = all(k in state for k in WORKER_KEYS)
        self._worker_state = tuple(int(state[k]) for k in WORKER_KEYS) if has_worker else None
        self._pass_done = False  # a state saved after the last batch resumes to the end
        self._skip = 0
        layout = ("world_size", "batch_size", "num_workers")
        self.resumed_from = {k: int(state[k]) for k in layout if k in state}
        self._iter = None

    def mark_consumed(self, batch: dict) -> None:
        """Record that ``batch`` was used, so ``state_dict()`` resumes after it: for
        batches that came through a plain ``DataLoader``'s worker processes, which the
        main process's stream never sees."""
        self._position = tuple(int(x) for x in batch["stream_position"])
        self._worker_state, self._skip, self._iter, self._pass_done = None, 0, None, False

    # -- order ---------------------------------------------------------------------------
    def order(self, phase: int, epoch: int) -> np.ndarray:
        """The global order of a phase's rows in one epoch: a function of (seed, phase,
        epoch) only."""
        rows = self.phases[phase].rows
        if not self.shuffle:
            return np.arange(rows)
        return np.random.Generator(np.random.PCG64([self.seed, phase, epoch])).permutation(rows)

    def schedule(
        self, start: Position | None = None
    ) -> Iterator[tuple[int, int, np.ndarray, Position]]:
        """This rank's batches from ``start`` (default: the current position), without
        reading data: (phase, epoch, row ids with -1 for dummies, position after it)."""
        B, W, r = self.batch_size or 1, self.world_size, self.rank
        phase, epoch, start_sample = self._normalised(*(start or self._position))
        while phase < len(self.phases):
            rows = self.phases[phase].rows
            order = self.order(phase, epoch)
            pos = np.arange(start_sample + r, start_sample + W * -(-(rows - start_sample) // W), W)
            ids = np.where(pos < rows, order[np.minimum(pos, rows - 1)], -1)
            for i in range(0, len(ids), B):
                after = (phase, epoch, min(start_sample + W * (i + B), rows))
                yield phase, epoch, ids[i : i + B], after
            phase, epoch, start_sample = self._normalised(phase, epoch, rows)

    def num_batches(self) -> int:
        """Batches this rank yields from the current position to the end."""
        return sum(1 for _ in self.schedule())

    def __len__(self) -> int:
        """Batches (samples without a batch_size) this rank yields in one whole pass."""
        B, W = self.batch_size or 1, self.world_size
        per_rank = (-(-p.rows // W) for p in self.phases)  # ceil: dummies pad the last step
        return self.epochs * sum(-(-rows // B) for rows in per_rank)

    def at_end(self) -> bool:
        """Whether the position is past the last phase (a whole pass consumed)."""
        return self._normalised(*self._position)[0] >= len(self.phases)

    def restart(self) -> None:
        """Back to the start of the curriculum (a new pass, the same order)."""
        self._position, self._skip, self._worker_state, self._iter = (0, 0, 0), 0, None, None
        self._pass_done = False

    # -- data ----------------------------------------------------------------------------
    def table(self, phase: int) -> RowTable:
        if phase not in self._tables:
            info, manifest = self.phases[phase], self.manifests[phase]
            batches = (
                b for s in manifest.shards for b in open_shard(info.path / s.file).to_batches()
            )
            self._tables[phase] = RowTable(batches, info.seq_len, info.pad_id, self.domain_names)
            if self._tables[phase].rows != info.rows:
                raise ValueError(
                    f"{info.path}: shards hold {self._tables[phase].rows} rows, "
                    f"the manifest says {info.rows}"
                )
        return self._tables[phase]

    def __iter__(self) -> Iterator[dict]:
        """This worker's batches from the position; after a pass iterated to its end, a
        new pass.

        Worker w of n takes schedule batches w, w+n, ... ; after each it has n-1 to pass
        over (``worker_skip``), which is what a resumed worker continues with."""
        worker = get_worker_info()
        count, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        if self._worker_state is not None:  # a StatefulDataLoader worker resuming
            saved_id, saved_count, skip = self._worker_state
            if (saved_id, saved_count) != (worker_id, count):
                raise ValueError(
                    f"a state saved by DataLoader worker {saved_id} of {saved_count}, loaded "
                    f"in worker {worker_id} of {count}: load the whole loader state with "
                    "stream.load_state_dict(loader.state_dict()) for another worker count"
                )
            self._worker_state = None
        else:
            if self._pass_done:
                self.restart()
            skip = worker_id
        self._skip = skip
        return self._batches(skip, count)

    def _batches(self, skip: int, count: int) -> Iterator[dict]:
        for phase, _epoch, ids, after in itertools.islice(
            self.schedule(self._position), skip, None, count
        ):
            batch = self._make_batch(phase, ids, after)
            self._position, self._skip = after, count - 1  # before the batch leaves
            yield batch
        self._pass_done = True

    def _make_batch(self, phase: int, ids: np.ndarray, after: Position) -> dict:
        info = self.phases[phase]
        arrays = self.table(phase).batch(ids)
        if self.batch_size is None:  # one sample: no batch dimension
            arrays = {
                k: v if k == "cu_seqlens" else v.reshape(v.shape[1:]) for k, v in arrays.items()
            }
        batch: dict = {k: torch.from_numpy(v) for k, v in arrays.items()}
        batch.update(
            domain_names=self.domain_names,
            phase=info.name,
            phase_index=phase,
            seq_len=info.seq_len,
            rope_theta=info.rope_theta,
            stream_position=after,
        )
        return batch

    def __next__(self) -> dict:
        """In-process iteration for the trainer: ends (StopIteration) at the end of the
        curriculum instead of starting it again."""
        if self._iter is None:
            self._iter = self._batches(0, 1)
        return next(self._iter)


def merged_state(loader_state: dict, stream: TokenStream) -> dict[str, int]:
    """One stream state from a torchdata ``StatefulDataLoader`` state over ``stream``.

    With no workers the loader holds the stream's own state. With n workers it holds one
    state per worker, each at the position after the last batch that worker handed out;
    the batch consumed last is the furthest of those, so the merged position is their
    maximum, moved on by the batches consumed since the loader's last snapshot
    (``snapshot_every_n_steps`` > 1). Per-sample streams (``batch_size=None``) in a
    loader with workers interleave the workers' samples inside a batch, so no single
    position is exact there: that case is refused."""
    if "_num_yielded" in loader_state:  # single process: the stream's own state
        state = loader_state.get("dataset_state")
        if state is None:
            raise ValueError("the loader state holds no stream state (nothing iterated?)")
        return dict(state)
    snapshot = loader_state["_snapshot"]
    workers = [w.get("dataset_state") for w in snapshot["_worker_snapshots"].values()]
    states = [w for w in workers if w is not None]
    if not states:
        raise ValueError("the loader state holds no worker's stream state")
    if len(states) > 1 and stream.batch_size is None:
        raise ValueError("a per-sample stream read by several workers resumes only under "
                         "the same worker count: load the state into that loader")  # fmt: skip
    last = max(states, key=lambda s: (s["phase"], s["epoch"], s["sample"]))
    position = (last["phase"], last["epoch"], last["sample"])
    behind = int(loader_state.get("_steps_since_snapshot", 0))
    for _, _, _, after in itertools.islice(stream.schedule(position), behind):
        position = after
    merged = {k: v for k, v in last.items() if k not in WORKER_KEYS}
    merged.update(zip(("phase", "epoch", "sample"), position, strict=True))
    merged["num_workers"] = len(workers)
    return merged


def collate(samples: Sequence[dict]) -> dict:
    """Per-sample dicts (``TokenStream(batch_size=None)``) of one phase into a batch."""
    first, T = samples[0], samples[0]["seq_len"]
    if any(s["phase_index"] != first["phase_index"] for s in samples):
        raise ValueError("a batch cannot mix phases (seq_len and rope_theta differ)")
    batch = {k: torch.stack([s[k] for s in samples]) for k in (*ARRAY_KEYS, "sample_index")}
    ends = [s["cu_seqlens"][1:] + i * T for i, s in enumerate(samples)]
    batch["cu_seqlens"] = torch.cat([torch.zeros(1, dtype=torch.int32), *ends])
    meta = ("domain_names", "phase", "phase_index", "seq_len", "rope_theta")
    return batch | {k: first[k] for k in meta} | {"stream_position": samples[-1]["stream_position"]}


class StreamLoader:
    """A ``TokenStream`` read by DataLoader worker processes, as a trainer source: the
    position follows the batches handed out (not the ones prefetched), so
    ``state_dict()`` resumes at the exact next batch.

    ``next(loader)`` ends at the end of the curriculum (the trainer's way); a for loop
    (``iter``) after the end starts a new pass. torchdata's ``StatefulDataLoader`` over
    the stream does the same job with the standard interface (see the README)."""

    def __init__(self, stream: TokenStream, num_workers: int = 2, pin_memory: bool = False):
        if stream.batch_size is None:
            raise ValueError("StreamLoader needs a TokenStream with a batch_size")
        self.stream, self.num_workers, self.pin_memory = stream, num_workers, pin_memory
        self._iter: Iterator[dict] | None = None
        self._pass_done = False

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator[dict]:
        if self._pass_done:  # the last pass ran to its end: a new one
            self.stream.restart()
            self._iter, self._pass_done = None, False
        return iter(lambda: next(self, None), None)

    def __next__(self) -> dict:
        if self._iter is None:
            if self.stream.at_end():
                raise StopIteration
            loader = DataLoader(
                self.stream,
                batch_size=None,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
            self._iter = iter(loader)
        try:
            batch = next(self._iter)
        except StopIteration:
            self._pass_done = True
            raise
        self.stream.mark_consumed(batch)
        return batch

    def state_dict(self) -> dict[str, int]:
        return self.stream.state_dict() | {"num_workers": self.num_workers}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.stream.load_state_dict(state)
        self._iter, self._pass_done = None, False
