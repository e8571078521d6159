"""Hyperparameter transfer across width: tune a narrow proxy, train the wide model.

LongCat-Flash (section 2, after Everett et al. 2024, "Scaling Exponents Across
Parameterizations and Optimizers") trains with the standard parametrisation (SP) and
the "Adam LR full align" rule. For a target ``s = d_target / d_proxy`` times wider than
the proxy whose init and LR were tuned:

=============  ==========================  =====================
parameters     init std                    Adam LR
=============  ==========================  =====================
embedding      proxy's (unchanged)         proxy's (unchanged)
hidden         proxy's / sqrt(s)           proxy's / s
unembedding    proxy's / sqrt(s)           proxy's / s
vectors        1 (norm gains, unchanged)   proxy's (unchanged)
=============  ==========================  =====================

"hidden" is every matrix whose fan-in is the width (attention, dense FFNs, experts,
router); variance / s keeps each pre-activation O(1) as fan-in grows. Under full
alignment the update of a hidden matrix adds up coherently over its fan-in, so its LR
must shrink like 1/s. The embedding's fan-in is a one-hot token, which does not grow.
This model ties the unembedding's rules to the hidden ones (``ModelConfig.init_std``,
``TrainConfig.hidden_lr_scale``); residual output projections keep their
``1 / sqrt(5 n_layers)`` factor on top (``Model.__init__``).

    python -m model_hooks.width_transfer proxy_model.yaml --d-model 1024 --lr 3e-3
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from model_hooks.model import ModelConfig
from model_hooks.train_config import TrainConfig
from strict_config import ConfigError, validate_yaml

#: Width fields that grow with d_model when ``scale_width`` builds the target (head
#: dimensions stay: more heads, not wider ones, as between LongCat's sizes).
WIDTH_FIELDS = ("d_model", "n_heads", "q_lora_rank", "kv_lora_rank", "d_ffn", "d_expert")


@dataclass(frozen=True)
class GroupRule:
    """One parameter class of the table above, on the target."""

    lr_multiplier: float
    """Multiplies the schedule's lr (``TrainConfig.lr``, the proxy's tuned LR)."""
    init_std: float | None
    """Init std on the target; None for the norm gains (initialised to 1)."""


@dataclass(frozen=True)
class WidthTransfer:
    """The target's hyperparameters, derived from the proxy's."""

    width_ratio: float
    """s = target d_model / proxy d_model."""
    groups: dict[str, GroupRule]
    """embedding, hidden, unembedding, vector."""
    target_model: ModelConfig
    """The target architecture with the transferred init stds."""

    def train_config(self, proxy_train: TrainConfig) -> TrainConfig:
        """The proxy's TrainConfig with the target's per-group LR: ``lr`` (embedding and
        vectors) stays, the hidden matrices' multiplier becomes the transferred one."""
        return proxy_train.model_copy(
            update={"hidden_lr_scale": self.groups["hidden"].lr_multiplier}
        )

    def rows(self) -> list[tuple[str, float, float | None]]:
        """(group, lr multiplier, init std) for printing."""
        return [(name, g.lr_multiplier, g.init_std) for name, g in self.groups.items()]


def scale_width(proxy: ModelConfig, d_model: int) -> ModelConfig:
    """The proxy with every width field (``WIDTH_FIELDS``) multiplied by d_model /
    proxy.d_model; a field that would not be a whole number is an error."""
    ratio = d_model / proxy.d_model
    update = {}
    for field in WIDTH_FIELDS:
        value = getattr(proxy, field) * ratio
        if value != round(value) or value < 1:
            raise ValueError(
                f"{field}={getattr(proxy, field)} times the width ratio {ratio:g} is "
                f"{value:g}, not a whole number: pick a d_model that divides evenly"
            )
        update[field] = round(value)
    return proxy.model_copy(update=update)


def transfer_width(
    proxy: ModelConfig, target: ModelConfig, proxy_hidden_lr_scale: float = 1.0
) -> WidthTransfer:
    """Init stds and LR multipliers of ``target`` from the tuned ``proxy`` (SP, Adam LR
    full align). Only ``target.d_model`` sets the ratio; its own init stds are replaced.
    ``proxy_hidden_lr_scale`` is the proxy's own hidden multiplier (1 unless the proxy
    was itself transferred)."""
    s = target.d_model / proxy.d_model
    hidden_std = proxy.init_std / math.sqrt(s)
    hidden = GroupRule(lr_multiplier=proxy_hidden_lr_scale / s, init_std=hidden_std)
    groups = {
        "embedding": GroupRule(lr_multiplier=1.0, init_std=proxy.embedding_std),
        "hidden": hidden,
        "unembedding": hidden,
        "vector": GroupRule(lr_multiplier=1.0, init_std=None),
    }
    model = target.model_copy(
        update={"init_std": hidden_std, "embed_init_std": proxy.embedding_std}
    )
    return WidthTransfer(
        width_ratio=s, groups=groups, target_model=ModelConfig(**model.model_dump())
    )


def render(plan: WidthTransfer, lr: float) -> str:
    """The plan as a small table plus the target's ModelConfig fields as YAML."""
    lines = [f"width ratio s = {plan.width_ratio:g}", "group        lr            init std"]
    for name, multiplier, std in plan.rows():
        shown = "1 (gain)" if std is None else f"{std:.6g}"
        lines.append(f"{name:<12} {lr * multiplier:<13.6g} {shown}")
    lines.append("target model (ModelConfig):")
    lines.append(yaml.safe_dump(plan.target_model.model_dump(), sort_keys=False).rstrip())
    lines.append(
        f"target train: lr: {lr:g}, hidden_lr_scale: {plan.groups['hidden'].lr_multiplier:g}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print a wider model's init stds and per-group LRs from a tuned proxy."
    )
    parser.add_argument("proxy", type=Path, help="YAML of the proxy's ModelConfig fields")
    parser.add_argument("--d-model", type=int, required=True, help="the target width")
    parser.add_argument("--lr", type=float, default=TrainConfig.model_fields["lr"].default,
                        help="the proxy's tuned lr")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        proxy = validate_yaml(args.proxy, ModelConfig)
        plan = transfer_width(proxy, scale_width(proxy, args.d_model))
    except ConfigError as exc:  # unreadable or invalid: the message names the file and key
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a width the proxy cannot be scaled to
        print(f"error: {args.proxy}: {exc}", file=sys.stderr)
        return 2
    print(render(plan, args.lr))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
