"""The main job as named steps: curate -> train a tokenizer -> tokenize -> mix and pack
the curriculum -> train the MoE phase after phase -> report.

``run_demo`` is the one place to read the whole flow top to bottom: it generates the
demo corpus and calls the steps below in order on one run folder. Each step is also a
command of its own (``python -m pipeline curate|train-quality|train-tokenizer|tokenize|
mix|train|report``), and ``pipeline/cli.py`` calls the same functions, so a step prints
the same lines whether it runs alone or in the demo. The run folder's layout, which the
report reads::

    RUN/corpus/  RUN/quality/  RUN/curated/  RUN/tokenizer.json  RUN/tokenized/
    RUN/plans/   RUN/packed/<phase>/  RUN/curriculum.json  RUN/train/  RUN/report.html

Each step skips what its own markers say is done, so rerunning the demo after a crash
finishes the missing work. The steps import their modules when called: ``python -m
pipeline schema`` or a config error must not pay for importing Ray and torch.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from pipeline.config import ConfigError
from pipeline.safe_paths import system_folder_problem

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"
DEMO_FILES = (
    "demo_curate.yaml", "demo_quality.yaml", "demo_tokenize.yaml", "demo_model.yaml",
    "demo_train.yaml",
)  # fmt: skip
DEMO_MIX = REPO_ROOT / "mixes" / "demo.yaml"
DEMO_BATCH_SIZE = 2
"""The demo trains with this batch size (its model file is demo_model.yaml)."""


def run_demo(out: Path, seed: int, address: str | None, train_steps: int | None) -> int:
    """``python -m pipeline demo``: the main job on the bundled demo corpus, then the
    report. Returns the exit status: 1 when curation's accounting identity fails (the
    later steps would build on a miscounted corpus), else training's (0)."""
    from demo.corpus import generate_demo_corpus
    from report.page import write_report

    refuse_system_folder("--out", out)
    out = out.resolve()  # a relative --out: the copied configs resolve paths from their folder
    counts = generate_demo_corpus(out / "corpus", seed=seed)
    print(f"demo corpus in {out / 'corpus'}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    stage_demo_configs(out)

    train_quality_models(out / "demo_quality.yaml")
    status = curate(out / "demo_curate.yaml", address, overwrite=True)
    if status != 0:
        return status
    train_bpe_tokenizer(out / "demo_tokenize.yaml")
    tokenize(out / "demo_tokenize.yaml", address)
    mix_and_pack(DEMO_MIX, str(out / "tokenized"), out, address=address)
    status = train_on_curriculum(out, train_steps, DEMO_BATCH_SIZE, out / "demo_model.yaml")
    if status == 0:
        print(f"report: {write_report(out)}")
    return status


def stage_demo_configs(out: Path) -> None:
    """Copy the demo's configs next to its corpus: their relative paths name the run folder."""
    out.mkdir(parents=True, exist_ok=True)
    for name in DEMO_FILES:
        shutil.copyfile(CONFIGS / name, out / name)
    for eval_file in CONFIGS.glob("demo_eval*"):  # the decontamination sets it names
        shutil.copyfile(eval_file, out / eval_file.name)


def refuse_system_folder(option: str, out: Path) -> None:
    """An output folder in /etc, /usr, ... (or ``/``) is a ConfigError naming the option."""
    problem = system_folder_problem(str(out))
    if problem is not None:
        raise ConfigError(f"{option}: {problem}")


def train_quality_models(config_path: Path) -> None:
    """``train-quality``: the quality classifier and the fluency LM the curate config names."""
    from pipeline.train_quality import load_train_config, render_report, train_quality

    config = load_train_config(config_path)
    print(render_report(train_quality(config), config.output_dir))


def curate(config_path: Path, address: str | None, overwrite: bool) -> int:
    """``curate``: raw inputs -> curated document shards, rejects and ledger; prints the
    funnel. Returns 1 when ``input = kept + rejected + errors`` does not hold, else 0."""
    from pipeline.config import load_curate_config
    from pipeline.ledger import render_funnel
    from pipeline.runner import run_curate

    config = load_curate_config(config_path)
    try:
        result = run_curate(config, address=address, overwrite=overwrite)
    except ConfigError as exc:  # found while planning (paths, output_dir): name the file too
        raise ConfigError(f"{config_path}: {exc}") from exc
    print(render_funnel(result.ledger))
    if result.input_changes:
        print(f"input changed since the last run ({len(result.input_changes)}), re-run:")
        print("\n".join(f"  {change}" for change in result.input_changes))
    print(
        f"curated {result.ledger['documents_written']} documents in {result.seconds:.1f} s "
        f"({result.shards_run} shards run, {result.shards_skipped} already done)"
        f" -> {result.output_dir}"
    )
    if not result.ledger["identity_holds"]:
        return 1
    too_many = failed_documents_problem(result.ledger, config.max_error_share)
    if too_many:
        print(f"error: {too_many}", file=sys.stderr)
        return 3
    return 0


def failed_documents_problem(ledger: dict, max_share: float) -> str | None:
    """What to tell the user when more documents failed in a stage (``error:`` reasons)
    than ``max_error_share`` allows, naming the commonest failures; None when within."""
    totals = ledger["totals"]
    if totals["errors"] <= max_share * totals["input"]:
        return None
    reasons: dict[str, int] = {}
    for stage, entry in ledger["stages"].items():
        for reason, count in entry["errors"].items():
            reasons[f"{stage}: {reason}"] = reasons.get(f"{stage}: {reason}", 0) + count
    commonest = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:3]
    return (
        f"{totals['errors']:,} of {totals['input']:,} documents failed in a stage "
        f"({totals['errors'] / max(totals['input'], 1):.2%}, above max_error_share "
        f"{max_share:.2%}): "
        + ", ".join(f"{reason} ({count:,})" for reason, count in commonest)
        + "; the outputs are written and each failed document is in rejects/ with its reason"
    )


def train_bpe_tokenizer(config_path: Path) -> None:
    """``train-tokenizer``: a byte-level BPE on the curated documents."""
    from pipeline.tokenizing import load_tokenize_config, train_tokenizer

    result = train_tokenizer(load_tokenize_config(config_path))
    print(f"trained a {result['vocab_size']}-token BPE -> {result['path']}")


def tokenize(config_path: Path, address: str | None) -> None:
    """``tokenize``: curated documents -> tokenized shards."""
    from pipeline.token_runner import run_tokenize
    from pipeline.tokenizing import load_tokenize_config

    result = run_tokenize(load_tokenize_config(config_path), address=address)
    print(
        f"tokenized {result.manifest['documents']} documents, {result.manifest['tokens']:,}"
        f" tokens in {result.seconds:.1f} s ({result.shards_run} shards run,"
        f" {result.shards_skipped} already done) -> {result.output_dir}"
    )


def mix_and_pack(
    mix_path: Path,
    tokenized: str,
    out: Path,
    scale: float = 1.0,
    seed: int | None = None,
    address: str | None = None,
    local: bool = False,
    overwrite: bool = False,
) -> None:
    """``mix``: plan every phase of a curriculum and pack it into token shards under
    ``out/packed/<phase>`` (on Ray, or in this process with ``local``: the same bytes)."""
    from pipeline.mix_config import load_mix
    from pipeline.mixing import claim_mix_out, pack_locally, prepare_mix, render_summary, run_mix
    from pipeline.token_runner import run_mix_on_ray

    refuse_system_folder("--out", out)
    mix = load_mix(mix_path, scale=scale)
    claim_mix_out(out, mix, overwrite)
    prepared = prepare_mix(mix, tokenized)
    seed = mix.config.seed if seed is None else seed
    if local:  # same bytes as the Ray path, without Ray's start-up and shuffle costs
        result = run_mix(mix, prepared, str(out), seed, pack_locally)
    else:
        result = run_mix_on_ray(mix, prepared, str(out), seed, address=address)
    print(render_summary(result))
    print(f"packed {len(result.manifests)} phase(s) -> {result.out_dir}/packed")


def train_on_curriculum(
    out: Path, steps: int | None, batch_size: int | None = None, model_config: Path | None = None
) -> int:
    """``python -m pipeline train OUT/demo_train.yaml``: the bundled MoE over the packed
    phases in curriculum order (``steps=None``: every batch of every phase). A batch size
    or model file given here replaces the config's."""
    from pipeline.train_cmd import train_command

    overrides: dict[str, object] = {}
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    if model_config is not None:
        overrides["model"] = str(model_config)
    return train_command(out / "demo_train.yaml", steps, overrides)
