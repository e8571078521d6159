"""The mix YAML (``mixes/*.yaml``): a curriculum of named phases, validated in one place.

Checked before any work, in two steps, each reporting every problem at once with the
file and the key:

1. ``load_mix``: the file alone. Unknown keys, types, ``seq_len`` a positive integer,
   budgets (``20T``, ``80B``, ``500M``, ``1.5k`` or a plain integer), phase names
   unique, ``base`` resolvable and acyclic, weights summing to 1.
2. ``check_against_data``: the file against the tokenized document index (metadata
   only, no tokens). A component whose selection is empty, that selects by a column
   the data lacks, or whose share of the budget exceeds ``max_epochs`` times the tokens
   it selects (the message names the component and its available tokens).

A phase's weights are shares of its tokens. Without ``base`` the weights plus
``long_doc_share`` sum to 1. With ``base: NAME`` (a phase of this file) or ``base:
FILE.yaml#NAME`` (relative to this file), the base phase's components fill the share
that the phase's own weights and ``long_doc_share`` leave, in the base's proportions:
"the pretraining mix plus 25% long documents" is ``base`` plus ``long_doc_share: 0.25``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from stages.mix import PLAN_VERSION, ComponentConfig, component_targets
from strict_config import ConfigError, StrictModel, check_safe_name, validate_yaml

LONG_DOCS = "long_docs"
WEIGHT_TOLERANCE = 1e-6
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMbBtT]?)\s*$")
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


def parse_tokens(value: int | float | str) -> int:
    """``20T`` -> 20 * 10**12; decimal suffixes k, M, B, T; a plain integer as is."""
    if isinstance(value, bool):
        raise ValueError("expected a token count such as 80B")
    if isinstance(value, int | float):
        if value != int(value):
            raise ValueError(f"a token count is a whole number, got {value}")
        number = int(value)
    else:
        match = _BUDGET.match(value)
        if not match:
            raise ValueError(
                f"expected a token count such as 20T, 80B, 500M or 1.5k, got {value!r}"
            )
        number = round(float(match.group(1)) * _SUFFIX[match.group(2).lower()])
    if number <= 0:
        raise ValueError(f"a token budget must be positive, got {value!r}")
    return number


class PackingConfig(StrictModel):
    window_sequences: int = Field(default=1024, gt=0, strict=True)
    """A packing window holds about this many rows' worth (x seq_len) of consecutive
    planned documents; BFD packs each window alone (one shard, one Ray task). Larger
    windows pad less and need more memory (window_sequences * seq_len * 4 bytes)."""


class PhaseConfig(StrictModel):
    name: str = Field(min_length=1)
    """Names the phase: its output folder, plan file and manifest; so a safe name
    (letters, digits, '.', '_', '-', starting with a letter or digit)."""

    tokens: int
    """Token budget (tokens in use, padding excluded): 20T, 80B, 500M, 1.5k or an integer."""

    seq_len: int = Field(gt=0, strict=True)
    """Tokens per packed row."""

    rope_theta: float | None = Field(default=None, gt=0)
    """RoPE base the trainer switches to for this phase (long-context phases)."""

    base: str | None = None
    """Take another phase's components (``NAME`` or ``FILE.yaml#NAME``) and add to them."""

    components: list[ComponentConfig] = Field(default_factory=list)
    """This phase's own components; weights are shares of the phase's tokens."""

    long_doc_share: float | None = Field(default=None, gt=0, lt=1)
    """Share of the phase's tokens from documents of at least ``long_doc_min_tokens``."""

    long_doc_min_tokens: int | None = Field(default=None, gt=0)
    """What counts as a long document, in tokens (needed with ``long_doc_share``)."""

    long_doc_max_epochs: float = Field(default=1.0, gt=0)
    """Passes over the long documents allowed to fill their share."""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_safe_name(value)

    @field_validator("tokens", mode="before")
    @classmethod
    def _parse_budget(cls, value: int | float | str) -> int:
        return parse_tokens(value)


class MixConfig(StrictModel):
    schema_version: Literal[1] = 1
    """Version of this schema; bumped when keys change meaning."""

    description: str = ""
    """Free text: what this curriculum is for."""

    seed: int = 0
    """Seeds document order and sampling; ``mix --seed`` overrides it."""

    packing: PackingConfig = Field(default_factory=PackingConfig)
    phases: list[PhaseConfig] = Field(min_length=1)
    """Run in this order."""


@dataclass(frozen=True)
class Component:
    """One component of a resolved phase: its effective share and where it was declared."""

    config: ComponentConfig
    where: str  # "FILE: phases[i].components[j] (name)", for error messages


@dataclass(frozen=True)
class Phase:
    name: str
    budget_tokens: int  # after --scale
    seq_len: int
    rope_theta: float | None
    components: tuple[Component, ...]

    def fingerprint(self, seed: int, window_sequences: int, data: str) -> str:
        """Names exactly what the phase's shards are made of, data included."""
        described = {
            "phase": self.name,
            "budget": self.budget_tokens,
            "seq_len": self.seq_len,
            "rope_theta": self.rope_theta,
            "seed": seed,
            "window": window_sequences,
            "data": data,
            "version": PLAN_VERSION,
            "components": [c.config.model_dump(mode="json") for c in self.components],
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Mix:
    path: Path
    config: MixConfig
    phases: tuple[Phase, ...]
    scale: float


def _read_mix(path: Path) -> MixConfig:
    return validate_yaml(path, MixConfig)


def load_mix(path: str | Path, scale: float = 1.0) -> Mix:
    """Read and validate a mix file; budgets are multiplied by ``scale`` (at least 1)."""
    path = Path(path)
    if not scale > 0:
        raise ConfigError(f"--scale must be positive, got {scale}")
    config = _read_mix(path)
    problems: list[str] = []
    resolved = _Resolver(problems).phases(path, config)
    if problems:
        raise ConfigError(
            f"{path}: invalid mix ({len(problems)} problem(s))\n" + "\n".join(problems)
        )
    phases = tuple(
        Phase(
            spec.name,
            max(1, round(spec.tokens * scale)),
            spec.seq_len,
            spec.rope_theta,
            resolved[spec.name],
        )
        for spec in config.phases
    )
    return Mix(path, config, phases, scale)


class _Resolver:
    """Resolves ``base`` chains across files, collecting problems instead of stopping."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self.files: dict[Path, MixConfig] = {}
        self.done: dict[tuple[Path, str], tuple[Component, ...]] = {}

    def phases(self, path: Path, config: MixConfig) -> dict[str, tuple[Component, ...]]:
        self.files[path.resolve()] = config
        seen: set[str] = set()
        for number, spec in enumerate(config.phases):
            if spec.name in seen:
                self.problems.append(
                    f"  {path}: phases[{number}].name: duplicate phase {spec.name!r}"
                )
            seen.add(spec.name)
        return {spec.name: self.resolve(path, spec.name, ()) for spec in config.phases}

    def resolve(self, path: Path, name: str, chain: tuple) -> tuple[Component, ...]:
        key = (path.resolve(), name)
        if key in self.done:
            return self.done[key]
        config = self.files[key[0]]
        number = next(i for i, p in enumerate(config.phases) if p.name == name)
        spec, where = config.phases[number], f"{path}: phases[{number}]"
        if key in chain:
            self.problems.append(f"  {where}.base: circular base chain through {name!r}")
            return ()
        base = self._base(path, spec, where, (*chain, key)) if spec.base else ()
        components = self._combine(spec, where, base)
        self.done[key] = components
        return components

    def _base(self, path: Path, spec: PhaseConfig, where: str, chain: tuple) -> tuple:
        file_part, _, name = spec.base.rpartition("#")
        base_path = (path.parent / file_part) if file_part else path
        if file_part and base_path.resolve() not in self.files:
            try:
                self.files[base_path.resolve()] = _read_mix(base_path)
            except ConfigError as exc:
                self.problems.append(f"  {where}.base: {exc}")
                return ()
        names = [p.name for p in self.files[base_path.resolve()].phases]
        if name not in names:
            self.problems.append(
                f"  {where}.base: no phase {name!r} in {base_path} (phases: {', '.join(names)})"
            )
            return ()
        return self.resolve(base_path, name, chain)

    def _combine(self, spec: PhaseConfig, where: str, base: tuple) -> tuple[Component, ...]:
        own = [
            Component(c, f"{where}.components[{j}] ({c.name})")
            for j, c in enumerate(spec.components)
        ]
        declared = sum(c.weight for c in spec.components) + (spec.long_doc_share or 0.0)
        if (spec.long_doc_share is None) != (spec.long_doc_min_tokens is None):
            self.problems.append(
                f"  {where}: long_doc_share and long_doc_min_tokens go together (set both)"
            )
        elif spec.long_doc_share is not None:
            long_docs = ComponentConfig(
                name=LONG_DOCS,
                weight=spec.long_doc_share,
                max_epochs=spec.long_doc_max_epochs,
                min_doc_tokens=spec.long_doc_min_tokens,
            )
            own.append(Component(long_docs, f"{where}.long_doc_share ({LONG_DOCS})"))
        if spec.base is None:
            if abs(declared - 1.0) > WEIGHT_TOLERANCE:
                self.problems.append(
                    f"  {where}.components: weights (with long_doc_share) sum to {declared:.6g};"
                    " they must sum to 1"
                )
            merged = own
        else:
            rest = 1.0 - declared
            if rest <= WEIGHT_TOLERANCE:
                self.problems.append(
                    f"  {where}.components: weights (with long_doc_share) sum to {declared:.6g};"
                    " with a base they must leave it a share (sum below 1)"
                )
            scaled = [
                Component(c.config.model_copy(update={"weight": c.config.weight * rest}), c.where)
                for c in base
            ]
            merged = scaled + own
        names = [c.config.name for c in merged]
        for name in sorted({n for n in names if names.count(n) > 1}):
            self.problems.append(f"  {where}: component name {name!r} used twice (with the base)")
        return tuple(merged)


def check_against_data(mix: Mix, index: pa.Table) -> dict[str, list[np.ndarray]]:
    """Selection masks per phase, or a ConfigError naming every component that selects
    nothing, needs a missing column, or cannot fill its share within ``max_epochs``."""
    problems: list[str] = []
    masks: dict[str, list[np.ndarray]] = {}
    for number, phase in enumerate(mix.phases):
        targets = component_targets(
            [c.config.weight for c in phase.components], phase.budget_tokens
        )
        masks[phase.name] = []
        for component, target in zip(phase.components, targets, strict=True):
            where = component.where
            if not where.startswith(f"{mix.path}: phases[{number}]"):
                where += f", inherited by phases[{number}] ({phase.name})"
            mask, problem = _check_component(component.config, index, target, phase)
            masks[phase.name].append(mask)
            if problem:
                problems.append(f"  {where}: {problem}")
    if problems:
        raise ConfigError(
            f"{mix.path}: the mix does not fit the data ({len(problems)} problem(s))\n"
            + "\n".join(problems)
        )
    return masks


def _check_component(
    component: ComponentConfig, index: pa.Table, target: int, phase: Phase
) -> tuple[np.ndarray, str | None]:
    """The component's selection mask, and what is wrong with it (None if nothing)."""
    missing = [c for c in component.required_columns() if c not in index.column_names]
    if missing:
        return np.zeros(index.num_rows, dtype=bool), (
            f"selects by {', '.join(missing)}, which the tokenized data does not have"
            " (curate with the stage that adds it)"
        )
    mask = component.mask(index)
    available = int(index.column("n_tokens").to_numpy()[mask].astype(np.int64).sum())
    if not mask.any():
        return mask, "selects no documents"
    if target > component.max_epochs * available:
        return mask, (
            f"needs {target:,} tokens ({component.weight:.4g} of {phase.budget_tokens:,}) but"
            f" selects {int(mask.sum()):,} documents with {available:,} tokens;"
            f" max_epochs {component.max_epochs:g} allows {int(component.max_epochs * available):,}"
        )
    return mask, None
