"""The public surface: every module declares __all__, every listed name exists, and both backends
export the same names (so a notebook switches backend with one parameter)."""

import importlib

import pytest

from ptycholib.backends import is_available

SHARED = ["config", "interop", "data", "simulate", "grouping", "forward", "reassemble", "metrics", "archive", "workflow",
          "plotting", "baseline", "parity", "notebooks", "bench", "backends", "batching", "cli", "schedules"]


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


@pytest.mark.skipif(not (is_available("torch") and is_available("tensorflow")), reason="needs both backends")
@pytest.mark.parametrize("part", ["physics", "network", "training", "reassemble"])
def test_backends_export_the_same_names(part):
    torch_names = set(importlib.import_module(f"ptycholib.torch.{part}").__all__)
    tf_names = set(importlib.import_module(f"ptycholib.tensorflow.{part}").__all__)
    assert torch_names == tf_names
