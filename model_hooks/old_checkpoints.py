"""Checkpoints of older versions of the trainer: recognise them, convert what can be.

Since the FFN experts became three stacked weights per layer (``moe.GroupedExperts``,
for the grouped matmul), a checkpoint holds ``layers.{l}.moe.experts.w_gate`` (N x F x D)
where older ones hold ``layers.{l}.moe.experts.{i}.w_gate.weight`` per expert, in the
model and in the optimiser's parameter names and AdamW moments. The model loads either
layout (``GroupedExperts._load_from_state_dict`` stacks the old one), but the optimiser
state does not: its groups hold 3 N parameters per layer where the optimiser now has 3.
Resuming such a checkpoint is refused with a message that names it and says what to do
(``stacked_experts_problem``); ``convert_stacked_experts`` (``python -m
model_hooks.old_checkpoints CKPT``) rewrites it in the stacked layout, AdamW moments
stacked the same way, which resumes exactly where the old run would have gone on.

A data state written by the old Ray Data path of the Ray Train trainer
(``{"source": "ray_data", "phase", "batches"}``) counts batches of Ray Data's own row
order, which the token stream cannot map onto its rows: refused too
(``old_data_state_problem``).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import torch

EXPERT_NAMES = ("w_gate", "w_up", "w_down")
_PER_EXPERT = re.compile(
    r"^(?P<prefix>.*\.experts)\.(?P<index>\d+)\.(?P<name>w_gate|w_up|w_down)\.weight$"
)
CONVERT_COMMAND = "python -m model_hooks.old_checkpoints"


class OldCheckpointError(ValueError):
    """A checkpoint this version of the trainer cannot resume as it is."""


def _per_expert_names(ckpt: dict) -> list[str]:
    model_keys = [k for k in ckpt.get("model", {}) if _PER_EXPERT.match(k)]
    groups = ckpt.get("optimizer", {}).get("param_groups", [])
    opt_names = [n for g in groups for n in g.get("param_names", []) if _PER_EXPERT.match(n)]
    return model_keys or opt_names


def stacked_experts_problem(ckpt: dict, path: Path) -> str | None:
    """Why ``ckpt`` (read from ``path``) cannot resume: it has per-expert weights or
    optimiser state from before the experts were stacked; None when it has not."""
    old = _per_expert_names(ckpt)
    if not old:
        return None
    return (
        f"{path} was written before the FFN experts were stacked for the grouped matmul "
        f"(it holds per-expert weights and AdamW state such as {old[0]!r}); this version "
        f"cannot resume its optimiser. Convert it in place with `{CONVERT_COMMAND} {path}` "
        "(exact: the moments are stacked the same way), or start a new run folder"
    )


def old_data_state_problem(ckpt: dict, path: Path) -> str | None:
    """Why the data state of ``ckpt`` cannot resume on the token stream, or None."""
    data = ckpt.get("data", {})
    if data.get("source") != "ray_data":
        return None
    return (
        f"{path} was written by the old Ray Data path of the Ray Train trainer (data "
        f"state {data}): it counts batches of Ray Data's own row order, which the token "
        "stream every run reads now cannot map onto its rows. Start a new run folder "
        "(its model can seed one: load ckpt['model'] yourself)"
    )


def _stack_run(names: list[str]) -> list[tuple[str, list[int]]]:
    """Group a parameter-name list into (new name, positions of the old names it stacks):
    a per-expert run ``P.experts.{0..N-1}.{w_gate,w_up,w_down}.weight`` becomes
    ``P.experts.w_gate``, ``P.experts.w_up``, ``P.experts.w_down`` (the order the stacked
    module registers them) where the run began; other names stay as they are."""
    out: list[tuple[str, list[tuple[int, int]]]] = []  # name, [(expert, position)]
    slots: dict[str, int] = {}
    for position, name in enumerate(names):
        match = _PER_EXPERT.match(name)
        if match is None:
            out.append((name, [(0, position)]))
            continue
        if f"{match['prefix']}.w_gate" not in slots:
            for w in EXPERT_NAMES:
                slots[f"{match['prefix']}.{w}"] = len(out)
                out.append((f"{match['prefix']}.{w}", []))
        out[slots[f"{match['prefix']}.{match['name']}"]][1].append((int(match["index"]), position))
    result = []
    for name, members in out:
        experts = sorted(members)
        if name in slots and [e for e, _ in experts] != list(range(len(experts))):
            raise OldCheckpointError(f"{name}: experts {[e for e, _ in experts]} are not 0..N-1")
        result.append((name, [position for _, position in experts]))
    return result


def convert_stacked_experts(ckpt: dict) -> dict:
    """``ckpt`` in the stacked-experts layout: model weights and every AdamW state
    tensor stacked over the experts in expert order. The per-parameter AdamW ``step``
    must agree over the experts it merges (one count for the stacked parameter); an
    expert that missed steps (no token in a whole batch) makes the conversion inexact,
    so it is refused."""
    model = dict(ckpt["model"])
    for key in [k for k in model if _PER_EXPERT.match(k)]:
        match = _PER_EXPERT.match(key)
        stacked = f"{match['prefix']}.{match['name']}"
        if stacked in model:
            continue
        n = 0
        while f"{match['prefix']}.{n}.{match['name']}.weight" in model:
            n += 1
        model[stacked] = torch.stack(
            [model.pop(f"{match['prefix']}.{i}.{match['name']}.weight") for i in range(n)]
        )
    optimizer = ckpt["optimizer"]
    old_state, new_state, groups, index = optimizer["state"], {}, [], 0
    for group in optimizer["param_groups"]:
        names, params = [], []
        for name, positions in _stack_run(list(group["param_names"])):
            old_ids = [group["params"][p] for p in positions]
            states = [old_state[i] for i in old_ids if i in old_state]
            if states and len(states) != len(old_ids):
                raise OldCheckpointError(f"{name}: AdamW state for only some of its experts")
            if len(states) == 1:
                new_state[index] = states[0]
            elif states:
                steps = {float(s["step"]) for s in states}
                if len(steps) > 1:
                    raise OldCheckpointError(
                        f"{name}: its experts took different numbers of AdamW steps "
                        f"{sorted(steps)}; the stacked parameter has one: not convertible exactly"
                    )
                new_state[index] = {
                    key: states[0][key] if key == "step" else torch.stack([s[key] for s in states])
                    for key in states[0]
                }
            names.append(name)
            params.append(index)
            index += 1
        groups.append({**group, "param_names": names, "params": params})
    return {**ckpt, "model": model, "optimizer": {"state": new_state, "param_groups": groups}}


def convert_file(path: Path) -> bool:
    """Convert the checkpoint at ``path`` in place (atomically); False if it already
    has the stacked layout."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not _per_expert_names(ckpt):
        return False
    converted = convert_stacked_experts(ckpt)
    tmp = path.with_suffix(".tmp")
    torch.save(converted, tmp)
    os.replace(tmp, path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rewrite a checkpoint from before the stacked experts in the stacked layout."
    )
    parser.add_argument("checkpoint", type=Path, help="ckpt.pt (or the run folder holding it)")
    args = parser.parse_args(argv)
    path = args.checkpoint / "ckpt.pt" if args.checkpoint.is_dir() else args.checkpoint
    done = convert_file(path)
    print(f"{path}: {'converted to stacked experts' if done else 'already stacked, unchanged'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
