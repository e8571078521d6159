"""The domain tagger's accuracy and the quality classifier's held-out precision/recall.

(a) Domain tags on ``../shared/data``, whose folders are the labels: ``stem/`` (LaTeX
    and SymPy reStructuredText) -> stem, ``code/`` -> code, ``long/`` (Gutenberg books)
    -> books, ``web/`` pages (extracted with our extract stage) -> web. Prints a
    confusion table and the accuracy per folder and sub-folder.
(b) ``train-quality`` twice: on the demo corpus with ``configs/demo_quality.yaml``
    (generated in a temporary folder) and on the shared data (positives: the Gutenberg
    books and the SymPy docs; negatives: the real Common Crawl pages of ``warc/`` and
    the web pages, English only), printing held-out precision and recall.

    python -m bench.quality [--data DIR] [--limit N] [--skip-demo] [--quick] [--json PATH]

``--quick``: 5 files per sub-folder, at most 15 documents per training source, no
demo-corpus training (a smoke run well under a minute). ``--json`` writes the bench
contract (``bench/contract.py``): accuracies and precision/recall as "ours", with no
peer (no shipped domain tagger or quality classifier to compare with).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.fs as pafs

from bench.contract import Row, add_contract_arguments, row, write_json
from bench.extract import load_pages, run_stage, to_table
from pipeline.train_quality import (
    SourceSpec,
    TrainQualityConfig,
    load_train_config,
    render_report,
    train_quality,
)
from stages.domain import DOMAINS, STEM_TERMS_PATH, DomainConfig, load_terms, tag_document
from stages.extract import Extract, ExtractConfig
from stages.readers import ReaderConfig, read_file

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
REPO = Path(__file__).resolve().parent.parent
LABELS = {"stem": "stem", "code": "code", "long": "books", "web": "web"}
QUICK_FILES = 5  # files per sub-folder under --quick
QUICK_DOCUMENTS = 15  # documents per training source under --quick


def labelled_documents(data: Path, limit: int | None) -> list[tuple[str, str, str, str | None]]:
    """(label, group, format, text) per file; group is the sub-folder shown in the table.
    Code goes through the reader (format from the extension); text files are read as
    they are (the readers do not know .tex); web pages through the extract stage."""
    docs = []
    filesystem = pafs.LocalFileSystem()
    for folder in ("stem", "code", "long"):
        files = sorted(p for p in (data / folder).rglob("*") if p.is_file())
        by_group: dict[str, list[Path]] = defaultdict(list)
        for path in files:
            by_group[path.relative_to(data / folder).parts[0] if folder != "long" else "-"].append(
                path
            )
        for group, paths in sorted(by_group.items()):
            for path in paths[:limit]:
                if folder == "code":
                    (row,) = list(read_file(str(path), path.name, filesystem, ReaderConfig()))
                    docs.append((LABELS[folder], group, row["format"], row["text"]))
                else:
                    docs.append((LABELS[folder], group, "text", path.read_text("utf-8", "replace")))
    pages = load_pages(data / "web", limit)
    texts = run_stage(Extract(ExtractConfig()), to_table(pages))
    docs += [("web", page.corpus, "html", text) for page, text in zip(pages, texts, strict=True)]
    return docs


def domain_counts(
    docs: list[tuple[str, str, str, str | None]],
) -> tuple[dict[tuple[str, str], Counter[str]], Counter[str]]:
    """Tags per (label, group), and per group the documents extraction found no text in."""
    terms, cfg = load_terms(STEM_TERMS_PATH), DomainConfig()
    rows: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    failed: Counter[str] = Counter()
    for label, group, fmt, text in docs:
        if text is None:
            failed[group] += 1
            continue
        rows[(label, group)][tag_document(text, fmt, terms, cfg)[0]] += 1
    return rows, failed


def domain_rows(rows: dict[tuple[str, str], Counter[str]]) -> list[Row]:
    """Accuracy per label (folder) and overall, in the bench contract."""
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    for (label, _), counts in rows.items():
        totals[label] += counts
    out = [
        row(f"domain accuracy, {label} (n={sum(c.values())})", c[label] / sum(c.values()),
            unit="fraction tagged as the folder's label")
        for label, c in sorted(totals.items())
    ]  # fmt: skip
    right = sum(totals[label][label] for label in totals)
    every = sum(sum(c.values()) for c in totals.values())
    out.append(row(f"domain accuracy, all (n={every})", right / every, unit="fraction correct"))
    return out


def domain_table(rows: dict[tuple[str, str], Counter[str]], failed: Counter[str]) -> str:
    """Confusion counts per (label, group) row; extraction failures are left out and counted."""
    head = f"{'label':6} {'folder':12} " + " ".join(f"{d:>6}" for d in DOMAINS)
    lines = [head + "  accuracy", "-" * (len(head) + 10)]
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    for (label, group), counts in sorted(rows.items()):
        totals[label] += counts
        cells = " ".join(f"{counts[d]:6d}" for d in DOMAINS)
        lines.append(f"{label:6} {group:12} {cells}  {_accuracy(counts, label)}")
    lines.append("-" * (len(head) + 10))
    for label, counts in sorted(totals.items()):
        cells = " ".join(f"{counts[d]:6d}" for d in DOMAINS)
        lines.append(f"{label:6} {'(all)':12} {cells}  {_accuracy(counts, label)}")
    every = sum(totals.values(), Counter())
    right = sum(totals[label][label] for label in totals)
    macro = sum(totals[label][label] / sum(totals[label].values()) for label in totals)
    lines.append(
        f"overall: {right}/{sum(every.values())} = {right / sum(every.values()):.3f}, "
        f"macro accuracy over labels {macro / len(totals):.3f}"
    )
    if failed:
        lines.append(f"left out, extraction found no text: {dict(failed)}")
    return "\n".join(lines)


def _accuracy(counts: Counter[str], label: str) -> str:
    total = sum(counts.values())
    return f"{counts[label]}/{total} = {counts[label] / total:.3f}"


def shared_quality_config(
    data: Path, output_dir: Path, max_documents: int | None = None
) -> TrainQualityConfig:
    """Reference text against real crawl, English only (the positives are English);
    ``max_documents`` samples each source (the --quick size)."""
    sources = {
        "positive": [(data / "long", "gutenberg"), (data / "stem" / "sympy_rst", "sympy_docs")],
        "negative": [
            (data / "warc" / "*.warc.gz", "common_crawl"),
            (data / "web" / "aeb" / "html", "aeb_pages"),
            (data / "web" / "trafilatura", "trafilatura_pages"),
        ],
    }
    specs = {
        side: [SourceSpec(path=str(path), name=name, max_documents=max_documents)
               for path, name in paths]
        for side, paths in sources.items()
    }  # fmt: skip
    return TrainQualityConfig(
        positive=specs["positive"],
        negative=specs["negative"],
        output_dir=str(output_dir),
        languages=["en"],
        max_examples_per_document=40,
        heldout_fraction=0.25,
        thresholds=[0.3, 0.5, 0.7],
    )


def demo_quality_config(folder: Path) -> TrainQualityConfig:
    from demo.corpus import generate_demo_corpus

    generate_demo_corpus(folder / "corpus", seed=0)
    shutil.copy(REPO / "configs" / "demo_quality.yaml", folder / "demo_quality.yaml")
    return load_train_config(folder / "demo_quality.yaml")


def quality_rows(name: str, report: dict) -> list[Row]:
    """Held-out precision and recall per threshold, and the fluency models' separation."""
    out = []
    for entry in report["heldout"]:
        for measure in ("precision", "recall"):
            out.append(
                row(f"quality classifier held-out {measure} at P>={entry['threshold']}, {name}",
                    entry[measure], unit="fraction (held-out documents' examples)")
            )  # fmt: skip
    gains = (report.get("word_order") or {}).get("heldout_median_gain") or {}
    for label in ("positive", "negative", "shuffled_positive"):
        if gains.get(label) is not None:
            out.append(
                row(f"word-order gain, held-out {label.replace('_', ' ')} median, {name}",
                    gains[label], unit="bits per token (fluency rejects below 0)")
            )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="../shared/data")
    parser.add_argument("--limit", type=int, default=None, help="files per sub-folder")
    parser.add_argument("--skip-demo", action="store_true", help="no demo-corpus training")
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    if not all((args.data / folder).is_dir() for folder in (*LABELS, "warc")):
        message = (
            f"skipped: ../shared/data with stem/ code/ long/ web/ warc/ not found ({args.data})"
        )
        print(message)
        write_json(args.json, "quality", [], [message])
        return 0
    limit = args.limit if args.limit is not None or not args.quick else QUICK_FILES
    notes = [
        "No peer: no domain tagger or quality classifier ships to compare with; 'ours' "
        "is an accuracy or precision/recall, ratio null.",
        "Domain labels are folders: stem/ includes SymPy pages about installation, "
        "contribution and tests, and web/ science news; see README for the misses.",
    ]
    if limit is not None:
        notes.append(f"{limit} files per sub-folder (--limit/--quick)")
    started = time.perf_counter()
    print("(a) domain tags against folder labels (stages/domain.py defaults)")
    counts, failed = domain_counts(labelled_documents(args.data, limit))
    print(domain_table(counts, failed))
    rows = domain_rows(counts)
    print(f"[{time.perf_counter() - started:.0f} s]\n")
    with tempfile.TemporaryDirectory() as tmp:
        skip_demo = args.skip_demo or args.quick
        runs = [] if skip_demo else [("demo corpus", demo_quality_config(Path(tmp)))]
        max_documents = QUICK_DOCUMENTS if args.quick else None
        shared = shared_quality_config(args.data, Path(tmp) / "shared", max_documents)
        runs.append(("shared data", shared))
        if max_documents is not None:
            notes.append(f"quality training on at most {max_documents} documents per source")
        for name, config in runs:
            started = time.perf_counter()
            print(f"(b) quality classifier, {name}")
            report = train_quality(config)
            print(render_report(report, config.output_dir))
            rows += quality_rows(name, report)
            print(f"[{time.perf_counter() - started:.0f} s]\n")
    write_json(args.json, "quality", rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
