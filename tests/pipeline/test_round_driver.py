"""The round driver of the global steps (``pipeline/round_driver.py``): whichever way a
step's rounds run, its decisions are the same bytes.

Each step (exact dedup, MinHash, template lines, chained as a run chains them) is
decided on one pass-1 output four ways: its rows meeting in the driver (the small
path), rounds of tasks with many partitions and runs in this process, and both paths
through Ray. Every decision file and summary must be identical, and one curate run of
the demo corpus per path must write identical documents, rejects and ledger."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.curate import RunLayout
from pipeline.exact_rounds import EXACT_DEDUP
from pipeline.minhash_rounds import MINHASH_DEDUP
from pipeline.round_driver import InProcess, RayTasks, decide, global_step
from pipeline.round_step import RoundStep
from pipeline.shards import Shard, write_json_atomic, write_parquet_atomic
from pipeline.template_rounds import TEMPLATE_LINES
from stages.exact_dedup import DIGEST_COLUMN, ExactDedupConfig, text_digests
from stages.minhash import MinHashConfig
from stages.template_lines import TemplateLinesConfig
from tests.pipeline.demo_configs import global_steps_config

SHARDS = 5
NOTE = "Support independent local journalism and become a member of the newsroom today."
SETTINGS = {
    "exact_dedup": ExactDedupConfig(),
    "minhash_dedup": MinHashConfig(bands=25, rows_per_band=5),
    "template_lines": TemplateLinesConfig(min_host_documents=3, min_corpus_documents=None),
}
STEPS: list[RoundStep] = [EXACT_DEDUP, MINHASH_DEDUP, TEMPLATE_LINES]  # in run order


def _documents(seed: int = 3) -> list[tuple[str, str]]:
    """(url, text): originals, exact copies, near duplicates (a few of 150 words swapped)
    and pages of one news site that share a footer line, shuffled."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    originals = [" ".join(rng.choices(vocab, k=150)) for _ in range(30)]
    rows = [(f"https://blog{i}.example/p", text) for i, text in enumerate(originals)]
    rows += [(f"https://copy{i}.example/", originals[i]) for i in range(0, 12, 2)]
    for i in range(10):
        words = originals[i % 5].split()
        for _ in range(rng.randrange(2, 6)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        rows.append((f"https://near{i}.example/", " ".join(words)))
    for i in range(8):
        story = " ".join(rng.choices(vocab, k=40))
        rows.append((f"https://news.example/{i}", f"{story}\n{NOTE}"))
    rng.shuffle(rows)
    return rows


def _write_pass_one(root: Path) -> tuple[RunLayout, list[Shard]]:
    layout = RunLayout.for_output(str(root))
    rows = _documents()
    for shard in range(SHARDS):
        mine = rows[shard::SHARDS]
        texts = pa.array([text for _, text in mine], pa.string())
        table = pa.table(
            {
                "id": [f"s{shard}-{i:03d}" for i in range(len(mine))],
                "shard": pa.array([shard] * len(mine), pa.int32()),
                "ordinal": pa.array(range(len(mine)), pa.int64()),
                "url": [url for url, _ in mine],
                "format": ["html"] * len(mine),
                "text": texts,
                DIGEST_COLUMN: text_digests(texts, SETTINGS["exact_dedup"]),
            }
        )
        write_parquet_atomic(layout.filesystem, layout.work_documents(shard), table)
        write_json_atomic(
            layout.filesystem, layout.work_stats(shard), {"documents": {"rows": len(mine)}}
        )
    return layout, [Shard(index=i, input_index=0, pieces=()) for i in range(SHARDS)]


def _decide_chain(layout: RunLayout, shards: list[Shard], expect: str, **how) -> dict[str, bytes]:
    """Decide the three steps in run order, each on what the earlier ones kept; every
    file each writes, by name (the ``_SUCCESS`` without what says how the work was
    cut)."""
    earlier, fingerprints, files = [], [], {}
    for step in STEPS:
        name = step.name
        fingerprint = f"{name}-f"
        settings = SETTINGS[name]
        decide(step, layout, shards, earlier, fingerprints, fingerprint, settings, **how)
        folder = Path(layout.decision_dir(name, fingerprint))
        for path in sorted(folder.iterdir()):
            data = path.read_bytes()
            if path.name == "_SUCCESS":
                summary = json.loads(data)
                assert summary.pop("layout")["path"] == expect
                # MinHash's band partitions, which a test's forced layout overrides
                # (a run's come from the corpus alone: the curate test compares them).
                summary.get("report", {}).pop("partitions", None)
                data = json.dumps(summary).encode()
            files[f"{name}/{path.name}"] = data
        earlier.append(global_step(step, settings, 0))
        fingerprints.append(fingerprint)
    return files


@pytest.fixture
def pass_one(tmp_path) -> tuple[RunLayout, list[Shard]]:
    return _write_pass_one(tmp_path / "run")


def _copy(layout: RunLayout, target: Path) -> RunLayout:
    """A fresh run folder with the same pass-1 outputs (no decisions yet)."""
    for shard in range(SHARDS):
        for path in (layout.work_documents(shard), layout.work_stats(shard)):
            destination = target / Path(path).relative_to(layout.root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(Path(path).read_bytes())
    return RunLayout.for_output(str(target))


def test_driver_path_and_task_rounds_write_the_same_decisions(pass_one, tmp_path):
    layout, shards = pass_one
    small = _decide_chain(layout, shards, executor=InProcess(), expect="driver")
    assert sum(name.endswith(".parquet") for name in small) >= 3 * 3  # every step decided
    for cpus, partitions, groups in [(1, 1, 1), (2, 3, 2), (3, 7, 5)]:
        target = _copy(layout, tmp_path / f"tasks-{cpus}-{partitions}-{groups}")
        cut = InProcess(cpus_=cpus, partitions=partitions, groups=groups)
        rounds = _decide_chain(target, shards, executor=cut, driver_max_bytes=0, expect="tasks")
        assert rounds == small, (cpus, partitions, groups)


def test_distributed_components_on_either_path_give_the_union_find_decision(pass_one, tmp_path):
    layout, shards = pass_one
    settings = SETTINGS["minhash_dedup"]
    stars = settings.model_copy(update={"union_find_max_edges": 0})
    decide(MINHASH_DEDUP, layout, shards, [], [], "union-find", settings, executor=InProcess())
    for name, executor, limit in [
        ("stars-driver", InProcess(), 1 << 40),
        ("stars-tasks", InProcess(cpus_=2, partitions=4, groups=3), 0),
    ]:
        decide(MINHASH_DEDUP, layout, shards, [], [], name, stars, executor=executor,
               driver_max_bytes=limit)  # fmt: skip
        for shard in range(SHARDS):
            expected = Path(layout.decision(MINHASH_DEDUP.name, "union-find", shard))
            got = Path(layout.decision(MINHASH_DEDUP.name, name, shard))
            assert got.exists() == expected.exists()
            assert not got.exists() or got.read_bytes() == expected.read_bytes()
        marker = Path(layout.decision_dir(MINHASH_DEDUP.name, name)) / "_SUCCESS"
        report = json.loads(marker.read_text())["report"]
        single = json.loads(
            (Path(layout.decision_dir(MINHASH_DEDUP.name, "union-find")) / "_SUCCESS").read_text()
        )["report"]
        assert report.pop("components") == "distributed stars"
        assert single.pop("components") == "driver union-find"
        report.pop("partitions"), single.pop("partitions")  # forced in one, as planned in the other
        assert report == single and report["dropped"] > 0


def test_ray_tasks_and_the_driver_write_the_same_decisions(ray_session, pass_one, tmp_path):
    layout, shards = pass_one
    small = _decide_chain(layout, shards, executor=InProcess(), expect="driver")
    target = _copy(layout, tmp_path / "ray-tasks")
    assert _decide_chain(target, shards, driver_max_bytes=0, expect="tasks") == small
    target = _copy(layout, tmp_path / "ray-driver")
    assert _decide_chain(target, shards, executor=RayTasks(), expect="driver") == small


def test_a_decided_step_is_not_decided_again(pass_one):
    layout, shards = pass_one
    settings = SETTINGS["exact_dedup"]
    decide(EXACT_DEDUP, layout, shards, [], [], "once", settings, executor=InProcess())
    marker = Path(layout.decision_dir(EXACT_DEDUP.name, "once")) / "_SUCCESS"
    marker.write_text('{"kept": true}\n')
    decide(EXACT_DEDUP, layout, shards, [], [], "once", settings, executor=InProcess())
    assert marker.read_text() == '{"kept": true}\n'


def _output_digests(folder: Path) -> dict[str, str]:
    """Every file a user reads (documents, rejects, ledger, funnel) and every decision."""
    files = [
        path
        for sub in ("docs", "rejects", "work")
        for path in sorted((folder / sub).rglob("*"))
        if path.is_file() and (sub != "work" or path.suffix == ".parquet")
    ] + [folder / "ledger.json", folder / "funnel.txt"]
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in files
    }


def test_curate_writes_the_same_bytes_on_either_path(ray_session, demo_corpus, tmp_path):
    """One run with every round as tasks; then its global decisions and finalized shards
    are removed and the run resumed with its rounds in the driver (``ray`` is a run
    setting: the documents pass is kept). The same documents, rejects, ledger, funnel
    and decision files, byte for byte."""
    from pipeline.config import load_curate_config
    from pipeline.runner import run_curate

    config = tmp_path / "curate.yaml"
    out = tmp_path / "out"
    outputs = {}
    for path, limit in [("tasks", 0), ("driver", 1 << 30)]:
        ray = f"{{driver_round_max_bytes: {limit}}}"
        config.write_text(global_steps_config(demo_corpus, "out", ray))
        result = run_curate(load_curate_config(config))
        assert sum(result.ledger["stages"]["minhash_dedup"]["rejected"].values()) > 0
        markers = [m for m in (out / "work").glob("*/*/_SUCCESS")]
        assert len(markers) == 3
        assert {json.loads(m.read_text())["layout"]["path"] for m in markers} == {path}
        outputs[path] = _output_digests(out)
        for step in ("exact_dedup", "minhash_dedup", "template_lines"):
            shutil.rmtree(out / "work" / step)
            for rejects in (out / "rejects").glob(f"{step}-*.parquet"):
                rejects.unlink()  # written again by finalize, or missing if it differs
        shutil.rmtree(out / "docs"), shutil.rmtree(out / "stats")
    assert outputs["driver"] == outputs["tasks"]
