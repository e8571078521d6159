"""The domain tagger's accuracy and the quality classifier's held-out precision/recall.

(a) Domain tags on ``../shared/data``, whose folders are the labels: ``stem/`` (LaTeX
    and SymPy reStructuredText) -> stem, ``code/`` -> code, ``long/`` (Gutenberg books)
    -> books, ``web/`` pages (extracted with our extract stage) -> web. Prints a
    confusion table and the accuracy per folder and sub-folder.
(b) ``train-quality`` twice: on the demo corpus with ``configs/demo_quality.yaml``
    (generated in a temporary folder) and on the shared data (positives: the Gutenberg
    books and the SymPy docs; negatives: the real Common Crawl pages of ``warc/`` and
    the web pages, English only), printing held-out precision and recall.

    python -m bench.quality [--data DIR] [--limit N] [--skip-demo]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.fs as pafs

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


def domain_table(docs: list[tuple[str, str, str, str | None]]) -> str:
    """Confusion counts per (label, group) row; extraction failures are left out and counted."""
    terms, cfg = load_terms(STEM_TERMS_PATH), DomainConfig()
    rows: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    failed: Counter[str] = Counter()
    for label, group, fmt, text in docs:
        if text is None:
            failed[group] += 1
            continue
        rows[(label, group)][tag_document(text, fmt, terms, cfg)[0]] += 1
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


def shared_quality_config(data: Path, output_dir: Path) -> TrainQualityConfig:
    """Reference text against real crawl, English only (the positives are English)."""
    return TrainQualityConfig(
        positive=[
            SourceSpec(path=str(data / "long"), name="gutenberg"),
            SourceSpec(path=str(data / "stem" / "sympy_rst"), name="sympy_docs"),
        ],
        negative=[
            SourceSpec(path=str(data / "warc" / "*.warc.gz"), name="common_crawl"),
            SourceSpec(path=str(data / "web" / "aeb" / "html"), name="aeb_pages"),
            SourceSpec(path=str(data / "web" / "trafilatura"), name="trafilatura_pages"),
        ],
        output_dir=str(output_dir),
        languages=["en"],
        max_examples_per_document=40,
        heldout_fraction=0.25,
        thresholds=[0.3, 0.5, 0.7],
    )


def demo_quality_config(folder: Path) -> TrainQualityConfig:
    from pipeline.demo import generate_demo_corpus

    generate_demo_corpus(folder / "corpus", seed=0)
    shutil.copy(REPO / "configs" / "demo_quality.yaml", folder / "demo_quality.yaml")
    return load_train_config(folder / "demo_quality.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="../shared/data")
    parser.add_argument("--limit", type=int, default=None, help="files per sub-folder")
    parser.add_argument("--skip-demo", action="store_true", help="no demo-corpus training")
    args = parser.parse_args(argv)
    if not all((args.data / folder).is_dir() for folder in (*LABELS, "warc")):
        print(f"skipped: ../shared/data with stem/ code/ long/ web/ warc/ not found ({args.data})")
        return 0
    started = time.perf_counter()
    print("(a) domain tags against folder labels (stages/domain.py defaults)")
    print(domain_table(labelled_documents(args.data, args.limit)))
    print(f"[{time.perf_counter() - started:.0f} s]\n")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [] if args.skip_demo else [("demo corpus", demo_quality_config(Path(tmp)))]
        runs.append(("shared data", shared_quality_config(args.data, Path(tmp) / "shared")))
        for name, config in runs:
            started = time.perf_counter()
            print(f"(b) quality classifier, {name}")
            print(render_report(train_quality(config), config.output_dir))
            print(f"[{time.perf_counter() - started:.0f} s]\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
