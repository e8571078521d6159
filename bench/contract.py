"""The JSON every bench script writes with ``--json PATH``, read by ``python -m bench all``.

One object per script: ``{"bench": name, "rows": [...], "notes": [...]}``; a row is
``{"measure", "ours", "peer", "peer_name", "ratio", "unit"}``. ``ratio`` is expressed so
that > 1 means ours is better (faster, fewer padding tokens, fewer splits), and ``unit``
says what the numbers are. Keeping the contract in one module means every script emits
rows the runner can merge without knowing the script.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def _number(value: float | int | None) -> float | int | None:
    """JSON has no NaN or infinity: those become null."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def row(
    measure: str,
    ours: float | None,
    peer: float | None = None,
    *,
    peer_name: str | None = None,
    unit: str = "",
    higher_is_better: bool = True,
    ratio: float | None = None,
    compare: bool = True,
) -> Row:
    """One result. Without an explicit ``ratio`` it is ours/peer (higher is better) or
    peer/ours (lower is better), so that > 1 always favours ours; ``compare=False``
    leaves it empty (counts side by side where neither is "better")."""
    if compare and ratio is None and ours is not None and peer is not None:
        numerator, denominator = (ours, peer) if higher_is_better else (peer, ours)
        ratio = numerator / denominator if denominator else None
    return {
        "measure": measure,
        "ours": _number(ours),
        "peer": _number(peer),
        "peer_name": peer_name if peer is not None or peer_name else None,
        "ratio": _number(ratio),
        "unit": unit,
    }


def add_contract_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quick`` (a smoke size, well under a minute) and ``--json PATH``."""
    parser.add_argument("--quick", action="store_true", help="a small smoke-run size")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="also write the rows as JSON"
    )


def write_json(path: Path | None, bench: str, rows: list[Row], notes: list[str]) -> None:
    """Write the contract object to ``path`` (nothing when ``path`` is None)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"bench": bench, "rows": rows, "notes": notes}
    path.write_text(json.dumps(body, indent=1, allow_nan=False) + "\n")


def validate(payload: Any, where: str) -> list[str]:
    """Problems with a contract object, each naming ``where``; empty when it is valid."""
    if not isinstance(payload, dict):
        return [f"{where}: expected a JSON object"]
    problems = []
    if not isinstance(payload.get("bench"), str):
        problems.append(f"{where}: 'bench' must be a string")
    rows = payload.get("rows")
    if not isinstance(rows, list):
        return [*problems, f"{where}: 'rows' must be a list"]
    for index, item in enumerate(rows):
        if not isinstance(item, dict) or not isinstance(item.get("measure"), str):
            problems.append(f"{where}: rows[{index}] needs a string 'measure'")
            continue
        for key in ("ours", "peer", "ratio"):
            value = item.get(key)
            if value is not None and not isinstance(value, int | float):
                problems.append(f"{where}: rows[{index}].{key} must be a number or null")
    if not isinstance(payload.get("notes", []), list):
        problems.append(f"{where}: 'notes' must be a list")
    return problems
