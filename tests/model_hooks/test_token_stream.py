from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from model_hooks.shard_format import open_shard, read_manifest
from model_hooks.synthetic import progression_documents, write_packed_phase
from model_hooks.token_stream import IGNORE_INDEX, StreamLoader, TokenStream, collate

ARRAYS = ("tokens", "targets", "loss_mask", "token_mask", "positions", "doc_index",
          "domain_ids", "cu_seqlens", "sample_index")  # fmt: skip


def make_phase(
    root: Path, name: str, n_docs: int = 40, seq_len: int = 32, seed: int = 0, **kwargs
) -> Path:
    """Short documents, one longer than a row (split), and a padded last row."""
    docs = progression_documents(n_docs, 64, seed=seed, min_doc_len=3, max_doc_len=20)
    docs.insert(5, (np.arange(1, 2 * seq_len + 7, dtype=np.uint32) % 63 + 1, "code"))
    write_packed_phase(root / name, docs, seq_len, 64, phase=name, rows_per_shard=7, **kwargs)
    return root / name


@pytest.fixture
def curriculum(tmp_path: Path) -> list[Path]:
    return [
        make_phase(tmp_path, "short", seq_len=32, seed=1, rope_theta=1e4),
        make_phase(tmp_path, "long", n_docs=30, seq_len=48, seed=2, rope_theta=1e6),
    ]


def _drain(source) -> list[dict]:
    return list(iter(lambda: next(source, None), None))


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ARRAYS) and a["phase"] == b["phase"]


def _served(batches: list[dict]) -> Counter:
    """(phase, epoch-free row id) of every real row served."""
    return Counter((b["phase_index"], int(i)) for b in batches for i in b["sample_index"] if i >= 0)


def _row(batch: dict) -> tuple[int, int]:
    return batch["phase_index"], int(batch["sample_index"][0])


def test_batch_fields_match_the_packed_rows(tmp_path: Path) -> None:
    phase = make_phase(tmp_path, "p")
    shards = read_manifest(phase).shards
    table = [row for s in shards for row in open_shard(phase / s.file).to_pylist()]
    stream = TokenStream(phase, batch_size=4, seed=3)
    names = stream.domain_names
    assert names == read_manifest(phase).domains
    batches = _drain(stream)
    assert sum(len(b["sample_index"]) for b in batches) == len(table)
    narrow = ("tokens", "positions", "doc_index", "domain_ids", "cu_seqlens")
    assert all(batches[0][k].dtype == torch.int32 for k in narrow)  # cast on the device
    assert batches[0]["targets"].dtype == torch.int64  # what cross_entropy takes
    for batch in batches:
        T = batch["seq_len"]
        for b, row_id in enumerate(batch["sample_index"].tolist()):
            row = table[row_id]
            cu, used = row["cu_seqlens"], row["n_tokens"]
            want_pos, want_doc, want_dom, want_mask = [], [], [], []
            for s, (a, z) in enumerate(itertools.pairwise(cu)):
                want_pos += list(range(z - a))
                want_doc += [s] * (z - a)
                want_dom += [names.index(row["domains"][s])] * (z - a)
                want_mask += [True] * (z - a - 1) + [False]  # no loss on a document's end
            pad = T - used
            assert batch["tokens"][b].tolist() == row["tokens"]
            assert batch["positions"][b].tolist() == want_pos + list(range(pad))
            assert batch["doc_index"][b].tolist() == want_doc + [len(cu) - 1] * pad
            assert batch["domain_ids"][b, :used].tolist() == want_dom
            assert batch["loss_mask"][b].tolist() == want_mask + [False] * pad
            assert batch["token_mask"][b].tolist() == [True] * used + [False] * pad
            targets = batch["targets"][b]
            mask = batch["loss_mask"][b]
            assert torch.equal(targets[:-1][mask[:-1]], batch["tokens"][b, 1:][mask[:-1]])
            assert (targets[~mask] == IGNORE_INDEX).all()
        flat_doc = batch["doc_index"] + 1000 * torch.arange(len(batch["doc_index"]))[:, None]
        starts = torch.nonzero(torch.diff(flat_doc.flatten(), prepend=torch.tensor([-1])))
        assert batch["cu_seqlens"][:-1].tolist() == starts.flatten().tolist()
        assert batch["cu_seqlens"][-1] == batch["tokens"].numel()
    assert any((~b["token_mask"]).any() for b in batches)  # the test saw padding


def test_global_order_is_seeded_and_each_rank_gets_its_share(curriculum: list[Path]) -> None:
    orders = [TokenStream(curriculum, seed=s).order(0, e) for s, e in ((0, 0), (0, 0), (1, 0))]
    assert np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[0], orders[2])
    assert not np.array_equal(orders[0], TokenStream(curriculum).order(0, 1))
    ranks = [
        _drain(TokenStream(curriculum, batch_size=2, rank=r, world_size=3, epochs=2))
        for r in range(3)
    ]
    assert len({len(batches) for batches in ranks}) == 1  # ranks stay in step
    rows = [read_manifest(p).rows for p in curriculum]
    want = Counter({(p, i): 2 for p, n in enumerate(rows) for i in range(n)})
    assert sum((_served(b) for b in ranks), Counter()) == want
    for step in zip(*ranks, strict=True):  # never two phases in one step, dummies masked
        assert len({b["phase"] for b in step}) == 1
        for b in step:
            assert not b["token_mask"][b["sample_index"] < 0].any()


def test_resume_gives_the_same_next_batches(curriculum: list[Path]) -> None:
    def stream() -> TokenStream:
        return TokenStream(curriculum, batch_size=3, seed=7, rank=1, world_size=2, epochs=2)

    straight = _drain(stream())
    for k in (0, 4, len(straight) // 2, len(straight) - 1):
        first = stream()
        for _ in range(k):
            next(first)
        resumed = stream()
        resumed.load_state_dict(first.state_dict())
        rest = _drain(resumed)
        assert len(rest) == len(straight) - k
        assert all(_same(a, b) for a, b in zip(rest, straight[k:], strict=True))


@pytest.mark.parametrize(("new_world", "new_batch"), [(1, 3), (4, 2)])
def test_resume_with_another_world_size(
    curriculum: list[Path], new_world: int, new_batch: int
) -> None:
    def ranks(world: int, batch: int) -> list[TokenStream]:
        return [
            TokenStream(curriculum, batch_size=batch, seed=5, rank=r, world_size=world, epochs=2)
            for r in range(world)
        ]

    everything = _served(_drain(TokenStream(curriculum, batch_size=1, seed=5, epochs=2)))
    old = ranks(2, 3)
    consumed = Counter()
    for _ in range(9):  # past the end of the first epoch of phase 0
        consumed += _served([next(s) for s in old])
    states = [s.state_dict() for s in old]
    assert all(state == states[0] for state in states)  # any rank's state will do
    assert (states[0]["world_size"], states[0]["batch_size"]) == (2, 3)  # saved layout
    new = ranks(new_world, new_batch)
    for s in new:
        s.load_state_dict(states[0])
        assert s.resumed_from == {"world_size": 2, "batch_size": 3}
        assert s.state_dict()["world_size"] == new_world
    remaining = sum((_served(_drain(s)) for s in new), Counter())
    assert consumed + remaining == everything
    # and the consumed part is exactly the head of the world-size-free global order
    head = TokenStream(curriculum, batch_size=1, seed=5, epochs=2)
    assert _served([next(head) for _ in range(consumed.total())]) == consumed
    # one rank resumed from that state continues the global order sample for sample
    single = TokenStream(curriculum, batch_size=1, seed=5, epochs=2)
    single.load_state_dict(states[0])
    assert [_row(b) for b in _drain(single)] == [_row(b) for b in _drain(head)]


def test_dataloader_workers_and_stream_loader_resume(curriculum: list[Path]) -> None:
    def stream() -> TokenStream:
        return TokenStream(curriculum, batch_size=4, seed=1)

    straight = _drain(stream())
    with_workers = list(DataLoader(stream(), batch_size=None, num_workers=2))
    assert all(_same(a, b) for a, b in zip(with_workers, straight, strict=True))
    loader = StreamLoader(stream(), num_workers=2)
    for _ in range(5):
        next(loader)  # the workers have prefetched more than that
    state = loader.state_dict()
    assert state["num_workers"] == 2 and state["world_size"] == 1
    resumed = StreamLoader(stream(), num_workers=2)
    resumed.load_state_dict(state)
    rest = _drain(resumed)
    assert all(_same(a, b) for a, b in zip(rest, straight[5:], strict=True))
    assert len(rest) == len(straight) - 5


def test_samples_collate_to_the_same_batches(curriculum: list[Path]) -> None:
    batches = _drain(TokenStream(curriculum[0], batch_size=4, seed=2))
    samples = _drain(TokenStream(curriculum[0], batch_size=None, seed=2))
    assert samples[0]["tokens"].shape == (32,) and samples[0]["cu_seqlens"][0] == 0
    for i, batch in enumerate(batches):
        assert _same(collate(samples[4 * i : 4 * i + 4]), batch)


def test_curriculum_metadata_and_state_checks(curriculum: list[Path], tmp_path: Path) -> None:
    stream = TokenStream(curriculum, batch_size=4)
    assert [p.rope_theta for p in stream.phases] == [1e4, 1e6]
    assert stream.domain_names == ["code", "math", "web"]
    seen = [(b["phase"], b["seq_len"], b["rope_theta"], b["tokens"].shape[1]) for b in stream]
    assert seen[0] == ("short", 32, 1e4, 32) and seen[-1] == ("long", 48, 1e6, 48)
    assert TokenStream(curriculum, batch_size=4).num_batches() == len(seen) == len(stream)
    assert stream.num_batches() == 0 and stream.at_end()  # the loop moved the position
    state = stream.state_dict()
    assert set(state) == {"version", "seed", "fingerprint", "phase", "epoch", "sample",
                          "world_size", "batch_size"}  # fmt: skip
    assert all(isinstance(v, int) for v in state.values())
    with pytest.raises(ValueError, match="seed"):
        TokenStream(curriculum, seed=1).load_state_dict(state)
    other = make_phase(tmp_path, "other", seed=9)
    with pytest.raises(ValueError, match="fingerprint"):
        TokenStream([curriculum[0], other]).load_state_dict(state)


def test_ray_data_path_yields_the_same_rows(curriculum: list[Path], ray_session) -> None:
    from model_hooks.ray_stream import packed_dataset, torch_batches

    stream = TokenStream(curriculum[0], batch_size=1000, shuffle=False)
    want = next(stream)
    dataset = packed_dataset(curriculum[0], domain_names=stream.domain_names)
    got = list(torch_batches(dataset, 8, stream.domain_names, device="cpu"))
    assert got[0]["domain_names"] == stream.domain_names and got[0]["tokens"].shape[1] == 32
    keys = ("tokens", "targets", "loss_mask", "token_mask", "positions", "doc_index",
            "domain_ids")  # fmt: skip

    def rows(batches: list[dict]) -> list[tuple]:
        return sorted(
            tuple(tuple(b[k][i].tolist()) for k in keys)
            for b in batches
            for i in range(len(b["tokens"]))
        )

    assert rows(got) == rows([want])
