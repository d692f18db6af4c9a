"""The suite's policies in tests/conftest.py: CI's PTYCHOLIB_REQUIRE_EXTRAS and the test order."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path


CONFTEST = Path(__file__).resolve().parent / "conftest.py"


def _conftest():
    """tests/conftest.py as a module of its own (the name ``conftest`` is shared with ../conftest.py)."""
    spec = importlib.util.spec_from_file_location("ptycholib_tests_conftest", CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

# A tiny suite: one skip for a missing package at run time, one at import time, one unrelated skip,
# one pass. Its conftest takes only the two report hooks from tests/conftest.py.
TINY_SUITE = {
    "conftest.py": f"""
        import importlib.util

        _spec = importlib.util.spec_from_file_location("ptycholib_tests_conftest", {str(CONFTEST)!r})
        _module = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_module)
        pytest_runtest_makereport = _module.pytest_runtest_makereport
        pytest_make_collect_report = _module.pytest_make_collect_report
    """,
    "test_runtime.py": """
        import pytest

        def test_needs_missing_package():
            pytest.importorskip("ptycholib_no_such_extra")

        @pytest.mark.skipif(True, reason="needs both backends")
        def test_needs_both_backends():
            pass

        def test_needs_a_backend():
            pytest.skip("neither torch nor tensorflow is installed")

        def test_skips_for_another_reason():
            pytest.skip("only meaningful on a GPU")

        def test_passes():
            pass
    """,
    "test_module_level.py": """
        import pytest

        pytest.importorskip("ptycholib_no_such_extra")

        def test_never_collected():
            pass
    """,
}


def _run_tiny_suite(tmp_path, require):
    for name, text in TINY_SUITE.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {k: v for k, v in os.environ.items() if k != "PTYCHOLIB_REQUIRE_EXTRAS"}
    if require:
        env["PTYCHOLIB_REQUIRE_EXTRAS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:xdist", "--continue-on-collection-errors", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    return result.stdout + result.stderr


def _summary(output, outcome, name):
    return any(line.startswith(outcome) and name in line for line in output.splitlines())


def test_missing_extra_skips_fail_when_required(tmp_path):
    output = _run_tiny_suite(tmp_path, require=True)
    assert _summary(output, "FAILED", "test_needs_missing_package"), output
    assert _summary(output, "FAILED", "test_needs_a_backend"), output
    assert _summary(output, "ERROR", "test_needs_both_backends"), output  # a skipif fails at setup
    assert _summary(output, "ERROR", "test_module_level.py"), output
    assert _summary(output, "SKIPPED", "only meaningful on a GPU"), output
    assert _summary(output, "PASSED", "test_passes"), output
    assert "PTYCHOLIB_REQUIRE_EXTRAS=1: skipped for a missing optional package" in output


def test_missing_extra_skips_stay_skips_by_default(tmp_path):
    output = _run_tiny_suite(tmp_path, require=False)
    assert "5 skipped" in output and "1 passed" in output and "failed" not in output, output


def test_missing_extras_reads_every_optional_dependency(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(textwrap.dedent("""
        [project.optional-dependencies]
        core = ["pytest>=8"]
        exotic = ["ptycholib-no-such-dist>=1", "pytest"]
        all = ["ptycholib[core,exotic]"]
    """))
    assert _conftest().missing_extras(pyproject) == {"exotic": ["ptycholib-no-such-dist>=1"]}


def test_slow_files_are_scheduled_first(request):
    """Collection order of this very session: SCHEDULE_FIRST and slow files lead (if collected)."""
    first_files = _conftest().SCHEDULE_FIRST
    paths = [item.path for item in request.session.items]
    files = list(dict.fromkeys(paths))  # in order of first appearance
    slow = {item.path for item in request.session.items if item.get_closest_marker("slow") or item.get_closest_marker("notebook")}
    ranks = [0 if any(str(f).endswith(first) for first in first_files) else 1 if f in slow else 2 for f in files]
    assert ranks == sorted(ranks)
    assert len(files) == len({f for f in paths}), "a file's tests must stay together"


def test_trained_parity_is_the_first_test_when_collected():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/test_grouping.py", "tests/parity/test_trained_parity.py", "tests/test_metrics.py"],
        cwd=CONFTEST.parents[1], capture_output=True, text=True, timeout=120,
    )
    first = next(line for line in result.stdout.splitlines() if "::" in line)
    assert first.startswith("tests/parity/test_trained_parity.py::"), result.stdout[-2000:]
