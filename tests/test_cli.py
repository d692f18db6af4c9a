import subprocess
import sys

import yaml

from ptycholib.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ptycholib", *args], capture_output=True, text=True)


def test_config_show_defaults_and_overrides(capsys):
    assert main(["config", "show", "nepochs=3", "model.N=128"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["training"]["nepochs"] == 3 and shown["model"]["N"] == 128


def test_config_show_file(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("model: {gridsize: 2}\n")
    assert main(["config", "show", str(path), "nepochs=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["gridsize"] == 2 and shown["training"]["nepochs"] == 7


def test_bad_input_exits_2_with_one_line_no_traceback(tmp_path):
    for args in (["config", "show", "nepoch=3"], ["config", "show", str(tmp_path / "missing.yaml")],
                 ["config", "show", "model.N=100"]):
        result = run_cli(*args)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("ptycholib config: error:")


def test_help_documents_options():
    result = run_cli("config", "show", "--help")
    assert result.returncode == 0 and "key=value" in result.stdout
    result = run_cli("--help")
    for command in ("config", "bench", "notebooks"):
        assert command in result.stdout


def test_unknown_command_exits_2():
    assert run_cli("frobnicate").returncode == 2
