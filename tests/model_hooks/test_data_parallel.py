"""GradientBuckets on two real gloo ranks (processes, no Ray): the averaged gradients
are exactly the mean of the ranks' own, identical on both ranks, reduced in several
buckets of which some leave during the backward; a parameter no rank used keeps no
gradient, one that only one rank used gets its share."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from model_hooks.data_parallel import GradientBuckets
from model_hooks.model import Model
from model_hooks.synthetic import SyntheticBatches
from tests.model_hooks.helpers import TINY

WORLD, STEPS, BUCKET_BYTES = 2, 2, 16 << 10  # ~10 buckets for the tiny model


class _WithOddParameters(torch.nn.Module):
    """The tiny model after two parameters registered first (so they sit in the last
    bucket, which leaves at the end of the backward): one only rank 0 uses, one no rank
    uses."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Linear(2, 2)
        self.rank0_only = torch.nn.Parameter(torch.ones(3))
        self.model = Model(TINY)


def _loss(model: _WithOddParameters, batch: dict, rank: int) -> torch.Tensor:
    logits_BTN, _, _ = model.model(batch["tokens"], batch["positions"], batch["doc_index"])
    loss = F.cross_entropy(logits_BTN.flatten(0, 1).float(), batch["targets"].flatten())
    if rank == 0:
        loss = loss + 1e-3 * model.rank0_only.sum()
    return loss


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def _rank(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)  # fmt: skip
    try:
        torch.manual_seed(0)
        model = _WithOddParameters()
        batches = SyntheticBatches(2, 32, TINY.vocab_size, seed=rank)  # other rows per rank
        steps = [next(batches) for _ in range(STEPS)]
        local = []
        for batch in steps:  # each rank's own gradients, before any hook exists
            model.zero_grad(set_to_none=True)
            _loss(model, batch, rank).backward()
            local.append(_grads(model))
        buckets = GradientBuckets(model, WORLD, BUCKET_BYTES)
        reduced, launched = [], []
        for batch in steps:
            model.zero_grad(set_to_none=True)
            _loss(model, batch, rank).backward()
            reduced.append(_grads(model))
            launched.append(buckets.launched_during_backward)
        torch.save({"local": local, "reduced": reduced, "launched": launched,
                    "buckets": len(buckets.buckets)}, Path(out_dir) / f"{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_buckets_average_exactly_and_overlap_the_backward(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD))
    assert r0["buckets"] >= 4
    assert all(0 < n < r0["buckets"] for n in r0["launched"] + r1["launched"])  # overlap
    for step in range(STEPS):
        g0, g1 = r0["local"][step], r1["local"][step]
        assert g0["unused.weight"] is None and r0["reduced"][step]["unused.weight"] is None
        assert g1["rank0_only"] is None and g0["rank0_only"] is not None
        for name, own0 in g0.items():
            if own0 is None and g1[name] is None:
                continue
            own1 = g1[name] if g1[name] is not None else torch.zeros_like(own0)
            mean = (own0 + own1) / WORLD
            assert torch.equal(r0["reduced"][step][name], mean), name
            assert torch.equal(r1["reduced"][step][name], mean), name
        embed = "model.embed.weight"
        assert not torch.equal(g0[embed], g1[embed])  # the ranks' batches differ
