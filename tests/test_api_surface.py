"""The public surface: every module declares __all__, every listed name exists, and both backends
export the same names in the same order and keep the same private helpers (so a notebook switches
backend with one parameter, and ``diff`` of two twins shows only framework calls)."""

import ast
import importlib
from pathlib import Path

import pytest

import ptycholib
from ptycholib.backends import is_available

SHARED = ["config", "interop", "data", "simulate", "grouping", "forward", "reassemble", "metrics", "archive", "workflow",
          "plotting", "baseline", "parity", "notebooks", "bench", "backends", "batching", "cli", "schedules", "refine", "tracking",
          "stream", "chunked", "distributed", "datacheck"]


@pytest.mark.parametrize("name", SHARED)
def test_all_names_exist(name):
    module = importlib.import_module(f"ptycholib.{name}")
    assert module.__all__, f"ptycholib.{name} has an empty __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing


def test_shared_modules_import_no_framework():
    import subprocess
    import sys

    code = ("import sys, ptycholib.workflow, ptycholib.parity, ptycholib.archive, ptycholib.notebooks; "
            "print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


TWIN_PARTS = ["__init__", "physics", "network", "training", "reassemble", "refine"]


def _twin_source(backend, part):
    """The parsed source of ``ptycholib/<backend>/<part>.py``, read without importing the framework."""
    return ast.parse((Path(ptycholib.__file__).parent / backend / f"{part}.py").read_text())


def _declared_all(tree):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("no __all__ assignment")


def _private_helpers(tree):
    """Names of the module-level ``_``-prefixed functions and classes."""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return sorted(node.name for node in tree.body if isinstance(node, kinds) and node.name.startswith("_"))


@pytest.mark.parametrize("part", TWIN_PARTS)
def test_backends_export_the_same_names_in_the_same_order(part):
    """The twins are one text in two frameworks (d2l): ``__all__`` is the same ordered list."""
    assert _declared_all(_twin_source("torch", part)) == _declared_all(_twin_source("tensorflow", part))


@pytest.mark.parametrize("part", ["physics", "network", "training", "reassemble", "refine"])
def test_backends_have_the_same_private_helpers(part):
    """Same helper names in both twins; where the algorithms differ, the helper's docstring says why."""
    assert _private_helpers(_twin_source("torch", part)) == _private_helpers(_twin_source("tensorflow", part))


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
@pytest.mark.parametrize("part", TWIN_PARTS[1:])
def test_backend_names_exist(backend, part):
    pytest.importorskip(backend)
    module = importlib.import_module(f"ptycholib.{backend}.{part}")
    assert module.__all__ and not [n for n in module.__all__ if not hasattr(module, n)]


@pytest.mark.skipif(not (is_available("torch") and is_available("tensorflow")), reason="needs both backends")
def test_get_backend_reaches_every_part():
    from ptycholib.backends import get_backend

    for name in ("torch", "tensorflow"):
        backend = get_backend(name)
        for part in TWIN_PARTS[1:]:
            assert getattr(backend, part) is importlib.import_module(f"ptycholib.{name}.{part}")
