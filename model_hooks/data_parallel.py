"""Data parallelism for ``train.run_loop`` over ``torch.distributed`` (no Ray here).

``DataParallel`` is the loop's ``Replicas`` for N ranks of an initialised process
group (gloo on CPU, NCCL on GPU; Ray Train's workers set it up). Two things keep the
replicas identical:

* gradients: ``GradientBuckets`` averages them over the ranks while the backward runs
  (below), before ``train_step`` clips them, so the clipping, the grad norm and the
  AdamW step are the same on every rank. A parameter that no rank used (an expert
  nobody routed to) keeps no gradient, as in one process.
* router biases: ``train_step``'s bias controller moves each rank's biases from its own
  routing counts. Afterwards every rank takes the token-weighted mean of the ranks'
  biases, ``b + sum_r n_r (b_r - b) / sum_r n_r`` (n_r: real tokens of rank r), which
  is exactly the controller's update from the routing counts of the whole global batch.

Gradient buckets, as torch DDP's reducer does it: the parameters, in reverse order of
registration (about the order the backward produces their gradients), are cut into
buckets of at most ``bucket_bytes``. A post-accumulate hook marks a parameter ready;
once every parameter of a bucket is ready, and every bucket before it has been launched,
the bucket's gradients (fp32, plus one used-by-this-rank flag per parameter) go into an
asynchronous all-reduce while the backward goes on with the layers below. A callback at
the end of the backward launches the buckets still waiting (those holding a parameter
this rank did not use), waits for all of them and writes the means back. Buckets are
launched in the same fixed order on every rank, so the collectives always match, and
each element's sum is the same reduction whatever the timing: the result is
deterministic and identical on every rank. ``torch.autograd.grad`` (train_step's R_g
measurement) accumulates nothing and so triggers nothing.

A parameter this rank did not use holds its bucket, and the ones after it, back to the
end of the backward (torch DDP's ``find_unused_parameters`` walks the graph for those
instead). In the MoE every parameter is used every step (the experts are three stacked
weights per layer), so that happens only when no token of a batch picks an FFN expert.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from model_hooks.model import Model
from model_hooks.train import Replicas

# torch DDP's default bucket. The demo model (3 MB of fp32) fits one bucket, reduced at
# the end of the backward: on a 2-core CPU box two Ray Train workers with 1 MB buckets
# took 0.52-0.55 s a step against 0.29-0.35 s with one (bench.train_loop, README); the
# overlap pays where the all-reduce runs beside the compute (NCCL on GPUs, big models).
DEFAULT_BUCKET_BYTES = 25 << 20


class _Bucket:
    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        self.pending = len(params)
        self.flat: torch.Tensor | None = None
        self.work: dist.Work | None = None


class GradientBuckets:
    """Averages the gradients of ``model`` over the ranks of the default process group,
    bucket by bucket as the backward produces them (see the module doc)."""

    def __init__(
        self, model: torch.nn.Module, world_size: int, bucket_bytes: int = DEFAULT_BUCKET_BYTES
    ) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        self.world_size = world_size
        self.buckets: list[_Bucket] = []
        current: list[torch.nn.Parameter] = []
        for p in reversed(params):
            if current and 4 * (sum(q.numel() for q in current) + p.numel()) > bucket_bytes:
                self.buckets.append(_Bucket(current))
                current = []
            current.append(p)
        if current:
            self.buckets.append(_Bucket(current))
        self._bucket_of = {id(p): b for b in self.buckets for p in b.params}
        self._next = 0  # the next bucket to launch
        self._queued = False
        self.launched_during_backward = 0  # of the last backward: the overlap, for tests
        for p in params:
            p.register_post_accumulate_grad_hook(self._ready)

    def _ready(self, param: torch.Tensor) -> None:
        if not self._queued:
            self._queued = True
            self.launched_during_backward = 0
            torch.autograd.Variable._execution_engine.queue_callback(self._finish)
        self._bucket_of[id(param)].pending -= 1
        while self._next < len(self.buckets) and self.buckets[self._next].pending == 0:
            self._launch(self.buckets[self._next])
            self.launched_during_backward += 1

    @torch.no_grad()
    def _launch(self, bucket: _Bucket) -> None:
        self._next += 1
        params = bucket.params
        used = [1.0 if p.grad is not None else 0.0 for p in params]
        grads = [p.grad.flatten().float() if p.grad is not None else None for p in params]
        device = params[0].device
        parts = [g if g is not None else torch.zeros(p.numel(), device=device)
                 for g, p in zip(grads, params, strict=True)]  # fmt: skip
        bucket.flat = torch.cat([*parts, torch.tensor(used, device=device)])
        bucket.work = dist.all_reduce(bucket.flat, async_op=True)

    @torch.no_grad()
    def _finish(self) -> None:
        """End of the backward: launch what waits (in order), then write the means back."""
        while self._next < len(self.buckets):
            self._launch(self.buckets[self._next])
        for bucket in self.buckets:
            bucket.work.wait()
            flat, params = bucket.flat, bucket.params
            used_anywhere = (flat[-len(params) :] > 0).tolist()
            flat = flat[: -len(params)] / self.world_size
            offset = 0
            for p, anywhere in zip(params, used_anywhere, strict=True):
                if anywhere:
                    p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
                offset += p.numel()
            bucket.flat, bucket.work, bucket.pending = None, None, len(params)
        self._next, self._queued = 0, False


def _router_biases(model: Model) -> list[torch.Tensor]:
    return [layer.moe.router.bias for layer in model.layers]


@torch.no_grad()
def merge_router_biases(before: list[torch.Tensor], model: Model, real_tokens: int) -> int:
    """The token-weighted mean of the ranks' controller updates (see the module doc);
    returns the real tokens of the global batch."""
    biases = _router_biases(model)
    weight = torch.tensor([float(real_tokens)], dtype=torch.float64, device=biases[0].device)
    deltas = [(b.double() - old.double()) * weight for b, old in zip(biases, before, strict=True)]
    flat = torch.cat([*deltas, weight])
    dist.all_reduce(flat)
    total = flat[-1].item()
    offset = 0
    for bias, old in zip(biases, before, strict=True):
        delta = flat[offset : offset + bias.numel()] / total if total else 0.0
        bias.copy_((old.double() + delta).to(bias.dtype))
        offset += bias.numel()
    return int(total)


@torch.no_grad()
def max_difference_across_ranks(tensors: list[torch.Tensor]) -> float:
    """Largest absolute difference between this rank's tensors and rank 0's (0 on every
    rank means the replicas agree bit for bit)."""
    flat = torch.cat([t.detach().double().flatten() for t in tensors])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item()


class DataParallel(Replicas):
    """``train.run_loop``'s hooks for rank ``rank`` of ``world_size`` in the default
    process group: one starting point, bucketed gradient all-reduce, merged router
    biases, global token counts and the per-rank losses in each record."""

    def __init__(self, rank: int, world_size: int, device: torch.device,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:  # fmt: skip
        self.rank, self.world_size, self.device = rank, world_size, device
        self.bucket_bytes = bucket_bytes
        self._before: list[torch.Tensor] = []
        self.gradients: GradientBuckets | None = None

    def prepare(self, model: Model) -> None:
        for tensor in model.state_dict().values():  # one starting point on every rank
            dist.broadcast(tensor, src=0)
        self.gradients = GradientBuckets(model, self.world_size, self.bucket_bytes)

    def all_have_batch(self, has_batch: bool) -> bool:
        value = torch.tensor([1.0 if has_batch else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def begin_step(self, model: Model) -> None:
        self._before = [b.clone() for b in _router_biases(model)]

    def end_step(self, model: Model, record: dict) -> dict:
        tokens = merge_router_biases(self._before, model, record["tokens"])
        losses = [torch.zeros(1, device=self.device) for _ in range(self.world_size)]
        dist.all_gather(losses, torch.tensor([record["lm_loss"]], device=self.device))
        return record | {
            "tokens": tokens,  # real tokens of the global batch
            "lm_loss_per_rank": [x.item() for x in losses],
            "world_size": self.world_size,
        }

    def checked(self, record: dict, model: Model) -> dict:
        record["max_param_diff_across_ranks"] = max_difference_across_ranks(
            list(model.parameters())
        )
        record["max_router_bias_diff_across_ranks"] = max_difference_across_ranks(
            _router_biases(model)
        )
        return record
