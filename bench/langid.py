"""How fast and how accurate the langid stage is on real text, and what its
``max_chars`` truncation costs in accuracy and buys in speed.

Reads ``../shared/data`` (not part of the repository): lingua's test sentences in 75
languages (Leipzig corpora; the file name is the ISO 639-1 code) and, for long
documents, the AEB article bodies, two Gutenberg books and the STEM sources.

    python -m bench.langid [--data ../shared/data] [--repeat 3] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from bench.contract import Row, add_contract_arguments, row, write_json
from stages.langid import LABEL_PREFIX, LangId, LangIdConfig

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRUNCATIONS = (None, 8000, 4000, 2000, 1000, 500, 200, 80)
FILTER_LANGUAGES = ("en", "de", "fr", "es", "ru", "zh", "ja")
# Labels lid.176 gives a language under another name, or that lingua splits finer.
SAME_LANGUAGE = {
    "nb": {"no"},
    "bs": {"hr", "sr", "sh"},
    "hr": {"bs", "sr", "sh"},
    "sr": {"bs", "hr", "sh"},
    "ms": {"id"},
}


def best_seconds(function: Callable[[], object], repeat: int) -> float:
    """Best of ``repeat`` runs: the machine is shared, the minimum is the least noisy."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def read_lingua(root: Path, kind: str) -> dict[str, list[str]]:
    """Lines per language code, from ``lingua/{kind}/{code}.txt``."""
    files = sorted((root / "langid" / "lingua" / kind).glob("*.txt"))
    return {f.stem: [s for s in f.read_text("utf-8").splitlines() if s.strip()] for f in files}


def long_documents(root: Path, lingua: dict[str, list[str]]) -> dict[str, list[str]]:
    """Document sets longer than ``max_chars``, labelled where the language is known."""
    aeb = json.loads((root / "web" / "aeb" / "ground-truth.json").read_text("utf-8"))
    books = [f.read_text("utf-8") for f in sorted((root / "long").glob("*.txt"))]
    chunks = [book[i : i + 20000] for book in books for i in range(0, len(book), 20000)]
    stem = [f.read_text("utf-8", "replace") for f in sorted((root / "stem").rglob("*.*"))]
    return {
        "aeb articles": [v["articleBody"] for v in aeb.values() if v["articleBody"].strip()],
        "gutenberg 20k-char chunks": chunks,
        "stem (latex, rst)": [s for s in stem if s.strip()],
        "lingua 50-sentence docs": ["\n".join(s[:50]) for s in lingua.values()]
        + ["\n".join(s[50:]) for s in lingua.values()],
    }


def accuracy_report(lingua: dict[str, list[str]]) -> float:
    """Top-label accuracy through the stage, strict and up to macro-language merges,
    and what a one-language filter at the default ``min_score`` keeps; returns the
    strict accuracy."""
    stage = LangId(LangIdConfig(min_score=None))
    known = {label.removeprefix(LABEL_PREFIX) for label in stage.model.get_labels()}
    truth = [code for code, lines in lingua.items() for _ in lines]
    out = stage(pa.table({"text": [line for lines in lingua.values() for line in lines]}))
    labels = out.column("language").to_pylist()
    scores = out.column("language_score").to_pylist()

    hits: dict[str, int] = dict.fromkeys(lingua, 0)
    lenient = 0
    for code, label in zip(truth, labels, strict=True):
        hits[code] += code == label
        lenient += code == label or label in SAME_LANGUAGE.get(code, ())
    covered = [code for code in lingua if code in known]
    n_covered = sum(len(lingua[c]) for c in covered)
    strict = sum(hits.values()) / len(truth)
    print(f"  {len(lingua)} languages, {len(truth)} lines: accuracy {strict:.1%}")
    print(
        f"  on the {len(covered)} languages lid.176 has a label for: "
        f"{sum(hits[c] for c in covered) / n_covered:.1%}"
    )
    print(f"  counting nb=no, bs=hr=sr=sh, ms=id as right: {lenient / len(truth):.1%}")
    missing = sorted(set(lingua) - known)
    print(f"  no lid.176 label (always wrong): {', '.join(missing) or 'none'}")
    worst = sorted((hits[c] / len(lingua[c]), c) for c in covered)
    print(
        "  labelled languages under 90%: " + ", ".join(f"{c} {a:.0%}" for a, c in worst if a < 0.9)
    )

    min_score = LangIdConfig().min_score or 0.0
    print(f"  filter to one language at min_score {min_score}: own lines kept / others let in")
    for code in FILTER_LANGUAGES:
        kept = [
            t
            for t, lab, sc in zip(truth, labels, scores, strict=True)
            if lab == code and sc >= min_score
        ]
        others = Counter(t for t in kept if t != code)
        print(
            f"    {code}: {kept.count(code) / len(lingua[code]):.0%} kept, "
            f"{sum(others.values())} others ({dict(others.most_common(4))})"
        )
    return strict


def speed_report(stage: LangId, lingua: dict[str, list[str]], repeat: int) -> tuple[float, float]:
    """Raw batch predictions/s against the whole stage call on the same lines; returns
    (stage rows/s, raw predictions/s)."""
    lines = [s for sentences in lingua.values() for s in sentences]
    seconds = best_seconds(lambda: stage.model.predict(lines, k=1), repeat)
    raw = len(lines) / seconds
    print(f"  model.predict(list): {raw:,.0f} predictions/s")
    table = pa.table({"text": lines, "format": ["text"] * len(lines)})
    seconds = best_seconds(lambda: stage(table), repeat)
    print(f"  LangId.__call__:     {len(lines) / seconds:,.0f} rows/s ({len(lines)} rows)")
    return len(lines) / seconds, raw


def truncation_report(root: Path, lingua: dict[str, list[str]], repeat: int) -> None:
    """Label agreement with the untruncated text, and speed, per ``max_chars``."""
    for name, docs in long_documents(root, lingua).items():
        chars = sum(len(d) for d in docs)
        print(f"  {name}: {len(docs)} docs, median {sorted(map(len, docs))[len(docs) // 2]} chars")
        table = pa.table({"text": docs})
        truth = None
        if name.startswith("lingua"):
            truth = list(lingua) * 2
        reference = None
        for max_chars in TRUNCATIONS:
            stage = LangId(LangIdConfig(max_chars=max_chars))
            out = stage(table)
            seconds = best_seconds(lambda s=stage, t=table: s(t), repeat)
            langs = out.column("language").to_pylist()
            kept = [r is None for r in out.column("drop_reason").to_pylist()]
            reference = reference or (langs, kept)
            same = sum(a == b for a, b in zip(langs, reference[0], strict=True)) / len(docs)
            flips = sum(a != b for a, b in zip(kept, reference[1], strict=True))
            line = f"    max_chars={max_chars!s:>5}: {len(docs) / seconds:8,.0f} docs/s"
            line += f" {chars / seconds / 1e6:6.1f}M chars/s, same label {same:6.1%}"
            line += f", keep/drop flips at 0.65 {flips}"
            if truth is not None:
                acc = sum(a == b for a, b in zip(langs, truth, strict=True)) / len(docs)
                line += f", accuracy {acc:.1%}"
            print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=3)
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    if not (args.data / "langid" / "lingua").is_dir():
        print(f"skip: {args.data}/langid/lingua is absent (bench data lives beside the repo)")
        write_json(args.json, "langid", [], [f"skipped: {args.data}/langid/lingua not found"])
        return 0

    # --quick: sentences only, 40 lines a language, one timing run, no truncation sweep
    per_language = 40 if args.quick else None
    repeat = 1 if args.quick else args.repeat
    rows: list[Row] = []
    for kind in ("sentences",) if args.quick else ("sentences", "word-pairs", "single-words"):
        print(f"accuracy, lingua {kind}:")
        lingua = {c: lines[:per_language] for c, lines in read_lingua(args.data, kind).items()}
        accuracy = accuracy_report(lingua)
        rows.append(row(f"lid.176 top-label accuracy, lingua {kind}", accuracy,
                        unit=f"fraction correct ({len(lingua)} languages)"))  # fmt: skip
    stage = LangId(LangIdConfig())
    lingua = {c: s[:per_language] for c, s in read_lingua(args.data, "sentences").items()}
    print("speed, lingua sentences (one core):")
    ours, raw = speed_report(stage, lingua, repeat)
    measure = "langid stage vs raw fastText predict, lingua sentences"
    peer = "fastText model.predict(list)"
    rows.append(row(measure, ours, raw, peer_name=peer, unit="rows/s (one core)"))
    if not args.quick:
        print("truncation (max_chars), long documents:")
        truncation_report(args.data, lingua, args.repeat)
    notes = [f"{sum(map(len, lingua.values()))} sentences timed, best of {repeat}"]
    write_json(args.json, "langid", rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
