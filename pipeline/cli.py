"""``python -m pipeline COMMAND``: parse, load and validate the config, run, report.

Commands:
  curate CONFIG.yaml   raw inputs -> curated document shards, rejects, ledger, manifest
  demo [--out DIR]     generate the bundled demo corpus and run the main job on it

The Ray address comes from ``--address`` or ``$RAY_ADDRESS``; with neither, an
embedded local Ray is started. A config error exits with status 2 before Ray starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.config import ConfigError, load_curate_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo_curate.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    curate = commands.add_parser("curate", help="raw crawl -> curated documents")
    curate.add_argument("config", type=Path)
    curate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an output_dir written by another configuration",
    )

    demo = commands.add_parser("demo", help="generate the demo corpus and run the main job")
    demo.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "runs" / "demo",
        help="run folder: OUT/corpus, OUT/demo_curate.yaml, OUT/curated",
    )
    demo.add_argument("--seed", type=int, default=0)
    return parser


def _curate(config_path: Path, address: str | None, overwrite: bool) -> int:
    from pipeline.ledger import render_funnel
    from pipeline.runner import run_curate

    config = load_curate_config(config_path)
    result = run_curate(config, address=address, overwrite=overwrite)
    print(render_funnel(result.ledger))
    print(
        f"curated {result.ledger['documents_written']} documents in {result.seconds:.1f} s "
        f"({result.shards_run} shards run, {result.shards_skipped} already done)"
        f" -> {result.output_dir}"
    )
    return 0 if result.ledger["identity_holds"] else 1


def _demo(out: Path, seed: int, address: str | None) -> int:
    """The demo config's paths are relative to its own folder, so a copy in OUT runs there."""
    from pipeline.demo import generate_demo_corpus

    corpus = out / "corpus"
    counts = generate_demo_corpus(corpus, seed=seed)
    print(f"demo corpus in {corpus}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    config_path = out / DEMO_CONFIG.name
    config_path.write_text(DEMO_CONFIG.read_text())
    return _curate(config_path, address, overwrite=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    # One line per pass with its counts, whatever the verbosity: long runs show progress.
    logging.getLogger("pipeline").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        if args.command == "curate":
            return _curate(args.config, args.address, args.overwrite)
        if args.command == "demo":
            return _demo(args.out, args.seed, args.address)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")
