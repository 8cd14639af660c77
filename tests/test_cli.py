"""The command line (femplast.app.cli): subcommands, the forms before them, examples."""

import importlib
import logging
import sys
import tomllib
from pathlib import Path

import pytest

import femplast  # noqa: F401
from femplast.app.cases import load_case
from femplast.app.cli import main
from femplast.version import __version__

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "cases" / "quickstart.yaml")


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "check", "reference", "plot", "examples", "gallery", "--version"):
        assert cmd in out


def test_plot_and_gallery_usage_name_the_console_script(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/somewhere/bin/femplast"])
    for cmd in ("plot", "gallery"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: femplast {cmd}")


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"femplast {__version__}"


def test_usage_names_the_console_script(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/somewhere/bin/femplast"])
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert capsys.readouterr().out.startswith("usage: femplast run")
    monkeypatch.setattr(sys, "argv", ["/x/femplast/__main__.py"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m femplast")


def test_console_script_entry_point_exists():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    mod, func = meta["scripts"]["femplast"].split(":")
    assert callable(getattr(importlib.import_module(mod), func))


def test_check_and_reference_in_both_forms(capsys):
    assert main(["check", QUICKSTART]) == 0
    assert main([QUICKSTART, "--check"]) == 0  # the form before subcommands
    assert capsys.readouterr().out.count("valid") == 2
    assert main(["reference"]) == 0
    ref = capsys.readouterr().out
    assert main(["--reference"]) == 0
    assert capsys.readouterr().out == ref and ref.startswith("# Case-file reference")
    assert main(["check", str(ROOT / "cases" / "nope.yaml")]) == 2
    assert main(["run"]) == 2 and "a case file is required" in capsys.readouterr().err
    assert main([]) == 2 and "COMMAND" in capsys.readouterr().err  # the help


def test_snapshots_beyond_the_end_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="femplast"):
        assert main(["check", QUICKSTART, "--set", "loading.gamma_max=0.5"]) == 0
    assert "output.snapshots: 1 beyond loading.gamma_max = 0.5 dropped" in caplog.text
    assert load_case(QUICKSTART, ["loading.gamma_max=0.5"]).output.snapshots == [0.1, 0.5]
    assert main(["check", QUICKSTART, "--set", "output.snapshots=[-0.1]"]) == 2


def test_stage_snapshots_beyond_the_stage_dropped(caplog):
    stages = "stages=[{name: a, gamma: 0.1, snapshots: [0.05, 0.2]}]"
    with caplog.at_level(logging.WARNING, logger="femplast"):
        case = load_case(QUICKSTART, ["output.snapshots=[]", stages])
    assert case.stages[0].snapshots == [0.05]
    assert "stages[0].snapshots: 0.2 beyond stages[0].gamma = 0.1 dropped" in caplog.text


def test_examples_copies_runnable_cases_and_reference(tmp_path, capsys):
    target = tmp_path / "ex"
    assert main(["examples", str(target)]) == 0
    names = {p.name for p in (target / "cases").glob("*.yaml")}
    assert names == {p.name for p in (ROOT / "cases").glob("*.yaml")}
    assert (target / "reference" / "synthetic_l6.6" / "macro.csv").is_file()
    case = load_case(target / "cases" / "sweep_small.yaml")  # ../reference resolves
    assert case.sweep.enabled
    assert main(["examples", str(target)]) == 2  # never overwrites
    assert "new or empty directory" in capsys.readouterr().err
