"""Names that become paths (phases, components) are validated in the schema, and every
path built from them is checked to stay inside the output root (issue 15, F9: a phase
named ``../../x`` made Ray write outside ``--out``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import cli
from pipeline.curate import RunLayout
from pipeline.mix_config import ConfigError, load_mix
from pipeline.mixing import phase_dir, plan_path
from pipeline.safe_paths import inside
from strict_config import check_safe_name

MIX = """\
phases:
  - name: {phase}
    tokens: 1k
    seq_len: 64
    components:
      - {{name: {component}, weight: 1.0}}
"""

HOSTILE = ["../../x", "/etc/x", "a/b", "..", ".", ".hidden", "-rf", "x\\ny", "a b", "x" * 129,
           "nul\\0byte", "café"]  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_phase_name_is_refused_naming_file_and_key(tmp_path, name):
    path = tmp_path / "mix.yaml"
    path.write_text(MIX.format(phase=f'"{name}"', component="web"))
    with pytest.raises(ConfigError) as info:
        load_mix(path)
    assert str(path) in str(info.value) and "phases[0].name" in str(info.value)
    assert "not a safe name" in str(info.value)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_component_name_is_refused_naming_file_and_key(tmp_path, name):
    path = tmp_path / "mix.yaml"
    path.write_text(MIX.format(phase="pre", component=f'"{name}"'))
    with pytest.raises(ConfigError) as info:
        load_mix(path)
    assert "phases[0].components[0].name" in str(info.value)


@pytest.mark.parametrize("name", ["pretrain", "long_context_32k", "midtrain-2", "v1.5", "A0"])
def test_ordinary_names_pass(name):
    assert check_safe_name(name) == name


def test_mix_command_with_a_traversing_phase_exits_2_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "mix.yaml"
    path.write_text(MIX.format(phase='"../../escaped"', component="web"))
    out = tmp_path / "deep" / "er" / "out"
    status = cli.main(["mix", str(path), "--tokenized", str(tmp_path / "tok"), "--out", str(out)])
    assert status == 2
    assert "phases[0].name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mix.yaml"]


@pytest.mark.parametrize("name", ["../../x", "/etc", "a/../../b"])
def test_paths_built_from_names_stay_inside_the_output(tmp_path, name):
    """The second line of defence: even a name that bypassed the schema cannot leave."""
    with pytest.raises(ValueError, match=r"outside|not a relative name"):
        phase_dir(str(tmp_path), name)
    with pytest.raises(ValueError, match=r"outside|not a relative name"):
        plan_path(str(tmp_path), name)
    with pytest.raises(ValueError, match=r"outside|not a relative name"):
        RunLayout.for_output(str(tmp_path)).path(name, "x.json")


def test_a_symlink_in_the_output_pointing_out_is_never_written_through(tmp_path):
    outside_folder = tmp_path / "elsewhere"
    outside_folder.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "docs").symlink_to(outside_folder)
    layout = RunLayout.for_output(str(out))
    with pytest.raises(ValueError, match="outside the output root"):
        layout.docs(0)
    assert layout.stats(0) == str(out / "stats" / "00000.json")
    assert inside(str(out), "stats", "00000.json") == str(Path(out) / "stats" / "00000.json")
    assert inside("s3://bucket/run", "docs", "a.parquet") == "s3://bucket/run/docs/a.parquet"
    with pytest.raises(ValueError):
        inside("s3://bucket/run", "..", "other", "a.parquet")


@pytest.mark.parametrize("command", ["mix", "demo"])
def test_mix_and_demo_refuse_a_system_folder(tmp_path, capsys, command):
    args = {"mix": ["mix", str(tmp_path / "m.yaml"), "--tokenized", str(tmp_path), "--out"],
            "demo": ["demo", "--out"]}[command]  # fmt: skip
    assert cli.main([*args, "/usr/share/curriculum"]) == 2
    assert "--out: /usr/share/curriculum lies in the system folder /usr" in capsys.readouterr().err
    assert not Path("/usr/share/curriculum").exists()
