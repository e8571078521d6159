"""The Ray Data path over packed shards, for Ray Train.

``packed_dataset(phase_dir)`` reads a phase's Arrow IPC shards with Ray Data (one read
task per shard file, record batch by record batch) and turns each block into the
training arrays with the same code as ``TokenStream`` (``RowTable.batch``);
``torch_batches(dataset, batch_size)`` iterates it with ``iter_torch_batches`` and
hands out the trainer's batch dict. The bundled trainer's Ray Train path
(``ray_train.fit_with_ray_train``) reads each rank's shard of the ``TokenStream``
instead, so its checkpoints hold one resumable position; this module is for a Ray Train
loop of your own that wants Ray Data to do the reading::

    shard = ray.train.get_dataset_shard("train")      # from packed_dataset(...)
    for batch in torch_batches(shard, 8, domain_names):
        ...

Ray Data owns the order here (file order, or a seeded block shuffle) and the split
between workers (``streaming_split`` / Ray Train's dataset shards); the exact,
world-size-independent resume of ``TokenStream`` is not available on this path. One
phase per dataset (seq_len and RoPE base differ between phases).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import ray.data
from ray.data.datasource import FileBasedDatasource

from model_hooks.packed_rows import ARRAY_KEYS, RowTable, domain_vocabulary
from model_hooks.shard_format import read_manifest


class PackedShardDatasource(FileBasedDatasource):
    """Arrow IPC packed shards; a random-access open (the IPC file footer is at the end)."""

    _FILE_EXTENSIONS: ClassVar[list[str]] = ["arrow"]

    def _open_input_source(self, filesystem, path: str, **open_args) -> pa.NativeFile:
        return filesystem.open_input_file(path)

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        reader = pa.ipc.open_file(f)
        for i in range(reader.num_record_batches):
            yield pa.Table.from_batches([reader.get_batch(i)])


def _training_arrays(
    table: pa.Table, seq_len: int, pad_id: int, vocab: list[str]
) -> dict[str, np.ndarray]:
    rows = RowTable(table.to_batches(), seq_len, pad_id, vocab)
    arrays = rows.batch(np.arange(rows.rows))
    return {k: arrays[k] for k in ARRAY_KEYS}


def packed_dataset(
    phase_dir: str | os.PathLike[str],
    *,
    domain_names: Sequence[str] | None = None,
    shuffle_seed: int | None = None,
) -> ray.data.Dataset:
    """A Ray dataset of one phase's training rows: (seq_len,) columns ``tokens``,
    ``targets``, ``loss_mask``, ``token_mask``, ``positions``, ``doc_index``,
    ``domain_ids``. ``domain_names`` defaults to the manifest's (pass the
    TokenStream's for a curriculum); ``shuffle_seed`` shuffles the block order."""
    phase_dir = Path(phase_dir)
    manifest = read_manifest(phase_dir)
    vocab = list(domain_names or domain_vocabulary([manifest], [phase_dir]))
    paths = [str(phase_dir / s.file) for s in manifest.shards]
    dataset = ray.data.read_datasource(PackedShardDatasource(paths))
    if shuffle_seed is not None:
        dataset = dataset.randomize_block_order(seed=shuffle_seed)
    kwargs = {"seq_len": manifest.seq_len, "pad_id": manifest.pad_id, "vocab": vocab}
    return dataset.map_batches(_training_arrays, batch_format="pyarrow", fn_kwargs=kwargs)


def torch_batches(
    dataset: ray.data.Dataset | ray.data.DataIterator,
    batch_size: int,
    domain_names: Sequence[str],
    *,
    device: str = "auto",
    drop_last: bool = False,
    extra: Mapping[str, object] | None = None,
) -> Iterator[dict]:
    """The trainer's batch dicts from ``iter_torch_batches`` (a dataset or a Ray Train
    dataset shard); ``extra`` adds plain values to every batch (a phase's ``phase``,
    ``seq_len`` and ``rope_theta``, as ``TokenStream`` batches carry them)."""
    plain = {"domain_names": list(domain_names), **(extra or {})}
    batches = dataset.iter_torch_batches(batch_size=batch_size, device=device, drop_last=drop_last)
    for batch in batches:
        yield {**batch, **plain}
