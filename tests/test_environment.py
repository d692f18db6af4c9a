"""environment.yml, pyproject.toml and the notebook conventions agree."""

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement):
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = next(d for d in conda if d.startswith("python"))
    assert python.split("=")[1] >= project["requires-python"].lstrip(">=")
    core = {_name(r) for r in project["dependencies"]}
    conda_names = {_name(d) for d in conda} - {"python", "pip"}
    assert conda_names == core, "environment.yml's conda packages must be pyproject's core dependencies"
    match = re.fullmatch(r"-e \.\[([\w,]+)\]", pip[0])
    assert match, pip
    extras = set(match.group(1).split(","))
    assert extras <= set(project["optional-dependencies"])


def test_all_extra_covers_every_extra_but_optional_loggers():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = set(re.search(r"\[(.*)\]", extras["all"][0]).group(1).split(","))
    assert listed == set(extras) - {"all", "mlflow"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_no_committed_ipynb():
    tracked = subprocess.run(["git", "ls-files", "notebooks/*.ipynb"], cwd=ROOT, capture_output=True, text=True)
    assert tracked.stdout.strip() == ""


def test_make_test_runs_two_workers_and_ci_requires_every_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "pytest-xdist" in {_name(r) for r in extras["test"]}  # environment.yml gets it through .[all]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\n\t.*-m pytest -n 2 --dist worksteal", makefile, re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "PTYCHOLIB_REQUIRE_EXTRAS=1 make test" in ci and "mlflow" in ci
