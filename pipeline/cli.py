"""``python -m pipeline COMMAND``: parse, load and validate the config, run, report.

Commands:
  curate CONFIG.yaml   raw inputs -> curated document shards, rejects, ledger, manifest
  demo [--out DIR]     the main job on the bundled demo corpus: curate, tokenize, mix and
                       pack, train, report
  train-quality CONFIG.yaml     train the quality classifier and the fluency LM
  train-tokenizer CONFIG.yaml   train a byte-level BPE on curated documents
  tokenize CONFIG.yaml          curated shards -> tokenized shards (Ray tasks)
  mix MIX.yaml --tokenized DIR --out DIR [--scale F] [--seed N]
                       plan and pack every phase of a curriculum into token shards
  report RUN_DIR [--out FILE] [--compare RUN_B]   one self-contained HTML page of the
                                run's plots; with --compare, two runs side by side
  train TRAIN.yaml [--steps N]  train the MoE through a curriculum's phases (resumes)
  grow --from RUN_DIR --to NEW_RUN_DIR   the twice-deeper model, same training state
  schema curate|tokenize|mix|train|quality   a config file's keys, defaults and meaning

Each command runs one step of the main job (``pipeline/flow.py``, where ``demo`` chains
them all); this module only parses the arguments and turns a ConfigError into exit 2.
The Ray address comes from ``--address`` or ``$RAY_ADDRESS``; with neither, an
embedded local Ray is started. A config error exits with status 2 before Ray starts.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from pipeline import flow
from pipeline.config import ConfigError
from pipeline.console import filtered_native_stderr

REPO_ROOT = Path(__file__).resolve().parent.parent
INTERRUPTED = (
    "interrupted: finished work is kept; run the same command again to resume "
    "(-v for the traceback)"
)


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

    schema = commands.add_parser("schema", help="print a config file's keys with their defaults")
    schema.add_argument("kind", choices=["curate", "tokenize", "mix", "train", "quality"])

    demo = commands.add_parser("demo", help="generate the demo corpus and run the main job")
    demo.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "runs" / "demo",
        help="run folder: OUT/corpus, OUT/curated, OUT/tokenized, OUT/packed, OUT/train, ...",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--train-steps", type=int, default=None, help="MoE steps (default: the whole curriculum)"
    )
    train_quality = commands.add_parser(
        "train-quality", help="train the quality classifier and fluency LM (fastText, n-gram)"
    )
    train_quality.add_argument("config", type=Path, help="e.g. configs/demo_quality.yaml")

    train_tokenizer = commands.add_parser(
        "train-tokenizer", help="train a byte-level BPE on curated documents"
    )
    train_tokenizer.add_argument("config", type=Path, help="tokenize config (configs/*.yaml)")
    tokenize = commands.add_parser("tokenize", help="curated documents -> token shards")
    tokenize.add_argument("config", type=Path, help="tokenize config (configs/*.yaml)")
    mix = commands.add_parser("mix", help="plan and pack a curriculum (mixes/*.yaml)")
    mix.add_argument("mix", type=Path, help="mix file (mixes/*.yaml)")
    mix.add_argument("--tokenized", required=True, help="output_dir of `tokenize`")
    mix.add_argument("--out", type=Path, required=True, help="OUT/plans, OUT/packed/<phase>")
    mix.add_argument("--scale", type=float, default=1.0, help="multiply every budget (1e-9)")
    mix.add_argument("--seed", type=int, default=None, help="override the mix file's seed")
    mix.add_argument("--local", action="store_true", help="pack in this process, without Ray")
    mix.add_argument("--overwrite", action="store_true",
                     help="replace the curriculum another mix file packed into --out")  # fmt: skip
    report = commands.add_parser("report", help="one HTML page of a run's plots")
    report.add_argument("run_dir", type=Path, help="holds curated/, tokenized/, packed/, train/")
    report.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/report.html")
    report.add_argument(
        "--compare", type=Path, default=None, metavar="RUN_B",
        help="a second run: funnel, languages, mix and training of both side by side "
        "(default out: RUN_DIR/report-vs-RUN_B.html)",
    )  # fmt: skip
    train = commands.add_parser("train", help="train the MoE through a curriculum's phases")
    train.add_argument("config", type=Path, help="TRAIN.yaml (configs/demo_train.yaml)")
    train.add_argument("--steps", type=int, default=None, help="override train.steps")
    grow = commands.add_parser("grow", help="model growth: stack a run's layers twice")
    grow.add_argument("--from", dest="source", type=Path, required=True,
                      help="run folder or checkpoint of the half-depth model")  # fmt: skip
    grow.add_argument("--to", dest="dest", type=Path, required=True, help="new run folder")
    return parser


def _report(run_dir: Path, out: Path | None, compare: Path | None = None) -> int:
    from report.page import write_report

    for folder in (run_dir, compare):
        if folder is not None and not folder.is_dir():
            print(f"error: run folder {folder} does not exist", file=sys.stderr)
            return 2
    print(write_report(run_dir, out, compare))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    # One line per pass with its counts, whatever the verbosity: long runs show progress.
    logging.getLogger("pipeline").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    with contextlib.nullcontext() if args.verbose else filtered_native_stderr():
        return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    try:
        if args.command == "curate":
            return flow.curate(args.config, args.address, args.overwrite)
        if args.command == "schema":
            from pipeline.schema_cmd import schema_command

            return schema_command(args.kind)
        if args.command == "demo":
            return flow.run_demo(args.out, args.seed, args.address, args.train_steps)
        if args.command == "train-quality":
            flow.train_quality_models(args.config)
            return 0
        if args.command == "train-tokenizer":
            flow.train_bpe_tokenizer(args.config)
            return 0
        if args.command == "tokenize":
            flow.tokenize(args.config, args.address)
            return 0
        if args.command == "mix":
            flow.mix_and_pack(
                args.mix, args.tokenized, args.out, args.scale, args.seed, args.address,
                args.local, args.overwrite,
            )  # fmt: skip
            return 0
        if args.command == "report":
            return _report(args.run_dir, args.out, args.compare)
        if args.command == "train":
            from pipeline.train_cmd import train_command

            return train_command(args.config, args.steps)
        if args.command == "grow":
            from pipeline.train_cmd import grow_command

            return grow_command(args.source, args.dest)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback through Ray's internals
        if args.verbose:
            raise
        print(INTERRUPTED, file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")
