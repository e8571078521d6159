"""The token stream under the loaders people use: torchdata's ``StatefulDataLoader``
(0, 1 and 2 workers, any K, a phase boundary), a plain ``DataLoader``, ``len``, a second
pass, and resumes onto another worker count or world size."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from model_hooks.token_stream import StreamLoader, TokenStream, collate, merged_state
from tests.model_hooks.test_token_stream import _drain, _same, _served, make_phase

BATCH = 3


@pytest.fixture(scope="module")
def curriculum(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("curriculum")
    return [
        make_phase(root, "short", seq_len=32, seed=1, rope_theta=1e4),
        make_phase(root, "long", n_docs=30, seq_len=48, seed=2, rope_theta=1e6),
    ]


def _stream(curriculum: list[Path], **kwargs) -> TokenStream:
    return TokenStream(curriculum, **{"batch_size": BATCH, "seed": 11, "epochs": 2} | kwargs)


@pytest.fixture(scope="module")
def straight(curriculum: list[Path]) -> list[dict]:
    return _drain(_stream(curriculum))


def _boundary(batches: list[dict]) -> int:
    """Batches before the first one of the second phase."""
    return next(i for i, b in enumerate(batches) if b["phase_index"] == 1)


def _through_checkpoint(state: dict) -> dict:
    """The state as a trainer checkpoint holds it (``torch.load(weights_only=True)``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    assert all(_same(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_stateful_dataloader_resumes_at_the_exact_next_batch(
    curriculum: list[Path], straight: list[dict], workers: int
) -> None:
    boundary = _boundary(straight)
    assert 3 < boundary < len(straight) - 1
    for k in sorted({0, 1, 3, boundary, boundary + 1, len(straight) - 1, len(straight)}):
        loader = StatefulDataLoader(_stream(curriculum), batch_size=None, num_workers=workers)
        batches = iter(loader)
        head = [next(batches) for _ in range(k)]
        state = _through_checkpoint(loader.state_dict())
        del batches, loader
        resumed = StatefulDataLoader(_stream(curriculum), batch_size=None, num_workers=workers)
        resumed.load_state_dict(state)
        _assert_same(head + list(resumed), straight)  # after the last batch: nothing more
    _assert_same(list(resumed), straight)  # and the epoch after it is a whole new pass


def test_stateful_dataloader_snapshot_interval_and_per_sample_streams(
    curriculum: list[Path], straight: list[dict]
) -> None:
    # Worker states saved every 4 batches: the loader replays the rest itself.
    k = _boundary(straight) + 2
    loader = StatefulDataLoader(
        _stream(curriculum), batch_size=None, num_workers=2, snapshot_every_n_steps=4
    )
    batches = iter(loader)
    for _ in range(k):
        next(batches)
    state = loader.state_dict()
    resumed = StatefulDataLoader(
        _stream(curriculum), batch_size=None, num_workers=2, snapshot_every_n_steps=4
    )
    resumed.load_state_dict(state)
    _assert_same(list(resumed), straight[k:])
    # merged for another loader: the same next batch despite the lagging snapshot
    stream = _stream(curriculum)
    stream.load_state_dict(state)
    _assert_same(_drain(stream), straight[k:])

    # Samples collated by the loader (one phase: a loader's batch cannot respect phase
    # boundaries): each worker fills a batch from its own samples.
    def samples() -> StatefulDataLoader:
        return StatefulDataLoader(_stream(curriculum[:1], batch_size=None), batch_size=BATCH,
                                  num_workers=2, collate_fn=collate)  # fmt: skip

    everything = [b["sample_index"].tolist() for b in samples()]
    loader = samples()
    batches = iter(loader)
    head = [next(batches)["sample_index"].tolist() for _ in range(4)]
    resumed = samples()
    resumed.load_state_dict(loader.state_dict())
    assert head + [b["sample_index"].tolist() for b in resumed] == everything
    with pytest.raises(ValueError, match="same worker count"):
        merged_state(loader.state_dict(), _stream(curriculum[:1], batch_size=None))


@pytest.mark.parametrize(("old_workers", "new_workers"), [(2, 0), (2, 3), (0, 2), (1, 2)])
def test_loader_state_resumes_under_another_worker_count(
    curriculum: list[Path], straight: list[dict], old_workers: int, new_workers: int
) -> None:
    k = _boundary(straight) - 1
    loader = StatefulDataLoader(_stream(curriculum), batch_size=None, num_workers=old_workers)
    batches = iter(loader)
    for _ in range(k):
        next(batches)
    state = loader.state_dict()
    stream = _stream(curriculum)
    stream.load_state_dict(state)  # a loader's state: merged into one position
    assert stream.resumed_from == {"world_size": 1, "batch_size": BATCH} | (
        {"num_workers": old_workers} if old_workers else {}
    )
    resumed = StatefulDataLoader(stream, batch_size=None, num_workers=new_workers)
    _assert_same(list(resumed), straight[k:])


def test_loader_state_resumes_under_another_world_size(curriculum: list[Path]) -> None:
    everything = _served(_drain(_stream(curriculum, batch_size=1)))
    loaders = [
        StatefulDataLoader(
            _stream(curriculum, rank=r, world_size=2), batch_size=None, num_workers=2
        )
        for r in range(2)
    ]
    iterators = [iter(loader) for loader in loaders]
    consumed = Counter()
    for _ in range(5):
        consumed += _served([next(it) for it in iterators])
    states = [merged_state(loader.state_dict(), _stream(curriculum)) for loader in loaders]
    assert all(s == states[0] for s in states)  # every rank is at the same global position
    ranks = [_stream(curriculum, batch_size=2, rank=r, world_size=3) for r in range(3)]
    for stream in ranks:
        stream.load_state_dict(states[0])
    rest = sum(
        (_served(list(StatefulDataLoader(s, batch_size=None, num_workers=1))) for s in ranks),
        Counter(),
    )
    assert consumed + rest == everything


def test_a_worker_state_in_another_worker_layout_is_refused(curriculum: list[Path]) -> None:
    loader = StatefulDataLoader(_stream(curriculum), batch_size=None, num_workers=2)
    batches = iter(loader)
    next(batches)
    worker_state = loader.state_dict()["_snapshot"]["_worker_snapshots"]["worker_1"]
    stream = _stream(curriculum)
    stream.load_state_dict(worker_state["dataset_state"])
    with pytest.raises(ValueError, match="worker 1 of 2"):
        iter(stream)


def test_plain_dataloader_resume_as_documented(
    curriculum: list[Path], straight: list[dict]
) -> None:
    k = _boundary(straight) + 1
    # no workers: the stream itself runs in this process and keeps its position
    stream = _stream(curriculum)
    batches = iter(DataLoader(stream, batch_size=None))
    head = [next(batches) for _ in range(k)]
    _assert_same(head, straight[:k])
    state = stream.state_dict()
    resumed = _stream(curriculum)
    resumed.load_state_dict(state)
    _assert_same(list(DataLoader(resumed, batch_size=None)), straight[k:])
    # workers: the main process marks the batches it used
    stream = _stream(curriculum)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    assert len(loader) == len(stream) == len(straight)
    for _, batch in zip(range(k), loader, strict=False):
        stream.mark_consumed(batch)
    state = stream.state_dict()
    assert (state["phase"], state["sample"]) == (1, BATCH)  # the phase's first batch used
    resumed = _stream(curriculum)
    resumed.load_state_dict(state)
    _assert_same(list(DataLoader(resumed, batch_size=None, num_workers=2)), straight[k:])


def test_len_and_second_passes(curriculum: list[Path], straight: list[dict]) -> None:
    stream = _stream(curriculum)
    assert len(stream) == stream.num_batches() == len(straight)
    for world in (2, 3):
        ranks = [_stream(curriculum, rank=r, world_size=world) for r in range(world)]
        assert [len(s) for s in ranks] == [len(_drain(s)) for s in ranks]
    samples = _stream(curriculum, batch_size=None)
    assert len(samples) == len(_drain(samples))
    _assert_same(list(stream), straight)
    _assert_same(list(stream), straight)  # a second pass: the same batches again
    assert next(stream, None) is None  # the trainer's next() stays at the end
    loader = StatefulDataLoader(_stream(curriculum), batch_size=None, num_workers=2)
    assert len(loader) == len(straight)
    _assert_same(list(loader), straight)
    _assert_same(list(loader), straight)
    stream_loader = StreamLoader(_stream(curriculum), num_workers=2)
    assert len(stream_loader) == len(straight)
    _assert_same(list(stream_loader), straight)
    assert next(stream_loader, None) is None
    _assert_same(list(stream_loader), straight)
