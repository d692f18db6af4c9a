"""Shared fixtures and the suite's policies.

Fixtures: a seeded ``rng`` and one tiny simulated data set (non-square object, N = 64), simulated
once per session and handed out as a copy, so a test may modify what it gets. ``tiny_data_dir``
holds ``train.npz``/``test.npz`` in the layout notebook 02 writes (what notebook 03 and the CLI read).

Policies (hooks below):

* one thread per framework in every test process (also in each pytest-xdist worker);
* slow test files run first (`pytest_collection_modifyitems`), so that with ``-n 2 --dist worksteal``
  (``make test``) the longest test starts at once and the other worker takes everything else;
* ``PTYCHOLIB_REQUIRE_EXTRAS=1`` (set by ``.ci/run``): every optional extra of pyproject.toml must
  be installed, and a skip caused by a missing optional package (``pytest.importorskip`` or a
  ``skipif`` that names a missing backend) fails the run instead of shrinking it.
"""

import dataclasses
import importlib.metadata
import os
import re
import tomllib
from pathlib import Path

# One thread for torch and OpenMP: on a shared 2-core machine two threads per test process collapse when
# another process holds a core (torch runs ~10x slower); set before torch/tensorflow are imported.
# TensorFlow keeps its default thread pools: pinning them to one thread changes the float32 reduction
# order enough that the trained-parity test's TF model ends 6.8 dB away from torch's (measured
# 2026-12-02; with TF's default pools both agree within the 1 dB target).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ptycholib import data, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_EXTRAS = "PTYCHOLIB_REQUIRE_EXTRAS"

# Files scheduled before all others, longest first; then every file holding a `slow` or `notebook`
# test, then the rest, each file kept whole (its module-scoped fixtures are built once per worker).
SCHEDULE_FIRST = ("tests/parity/test_trained_parity.py",)

# Skip reasons that mean "an optional package is missing": pytest.importorskip's message, and the
# skipif reasons the suite uses with `ptycholib.backends.is_available`.
MISSING_EXTRA = re.compile(
    r"could not import '|\bnot installed\b|\bneither\b.*\binstalled\b"
    r"|\bneeds (the )?(torch|tensorflow|lightning|ptychodus|ptylab|mlflow|papermill|jupytext|matplotlib)\b"
    r"|\bneeds both backends\b",
    re.IGNORECASE,
)


TINY_SHAPE = (100, 122)  # rows, cols: non-square, so transposed axes fail loudly
TINY_PATCH = 64
TINY_STEP = 8  # 8 x 5 = 40 raster positions


def _copy(dataset):
    copies = {
        f.name: getattr(dataset, f.name).copy()
        for f in dataclasses.fields(dataset)
        if isinstance(getattr(dataset, f.name), (np.ndarray, dict))
    }
    return dataclasses.replace(dataset, **copies)


def make_tiny_dataset(seed=0, *, shape=TINY_SHAPE, jitter_px=0.3, nphotons=1e6, object_kind="grf"):
    """Simulate the tiny data set (about 40 positions, sub-pixel jitter, phase and amplitude)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    obj = simulate.make_object(object_kind, shape, streams[0])
    probe = simulate.make_probe("disk", TINY_PATCH)
    x_px, y_px = simulate.raster_positions(shape, TINY_PATCH, step_px=TINY_STEP, jitter_px=jitter_px, rng=streams[1])
    return simulate.simulate_dataset(obj, probe, x_px, y_px, nphotons, streams[2], metadata={"seed": seed, "fixture": "tiny"})


@pytest.fixture
def rng():
    """A seeded NumPy generator, fresh for every test."""
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def _tiny_dataset_cached():
    return make_tiny_dataset()


@pytest.fixture
def tiny_dataset(_tiny_dataset_cached):
    """A small simulated `PtychoData`: 100 x 122 px GRF object, N = 64, 40 jittered positions, 1e6 photons."""
    return _copy(_tiny_dataset_cached)


@pytest.fixture(scope="session")
def tiny_train_test():
    """Tiny train and test sets on two objects (``simulate_train_test``; 36 + 16 patterns, N = 64); shared, do not modify."""
    return simulate.simulate_train_test(n_train=36, n_test=16, nphotons=1e6, step_px=4, seed=0)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory, tiny_train_test):
    """A folder with ``train.npz`` and ``test.npz`` of `tiny_train_test`, as notebook 02 writes them."""
    folder = tmp_path_factory.mktemp("tiny_data")
    train, test = tiny_train_test
    data.save_npz(train, folder / "train.npz")
    data.save_npz(test, folder / "test.npz")
    return folder


# --------------------------------------------------------------------------------------------------
# scheduling


def pytest_collection_modifyitems(session, config, items):
    """Run `SCHEDULE_FIRST`, then files with a slow or notebook test, then the rest (a stable sort).

    Whole files move, so that module-scoped fixtures are still built once per worker. With
    ``--dist worksteal`` the first worker starts on the longest test while the other takes the rest
    and steals from the first worker's queue, so the run ends about when the longest test does.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("notebook")}

    def rank(item):
        path = Path(str(item.path)).resolve()
        relative = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else None
        if relative in SCHEDULE_FIRST:
            return SCHEDULE_FIRST.index(relative)
        return len(SCHEDULE_FIRST) + (item.path not in slow_files)

    items.sort(key=rank)


# --------------------------------------------------------------------------------------------------
# PTYCHOLIB_REQUIRE_EXTRAS: a missing optional package fails instead of skipping


def _requiring_extras():
    return os.environ.get(REQUIRE_EXTRAS, "") not in ("", "0")


def _distribution_installed(requirement):
    name = re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0]
    # GPU machines install `tensorflow[and-cuda]` in place of `tensorflow-cpu` (README).
    for candidate in (name, name.removesuffix("-cpu")):
        try:
            importlib.metadata.version(candidate)
            return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


def missing_extras(pyproject=ROOT / "pyproject.toml"):
    """Return ``{extra: [requirements not installed]}`` over pyproject.toml's optional dependencies."""
    extras = tomllib.loads(Path(pyproject).read_text())["project"]["optional-dependencies"]
    missing = {}
    for extra, requirements in extras.items():
        absent = [r for r in requirements if not r.startswith("ptycholib[") and not _distribution_installed(r)]
        if absent:
            missing[extra] = absent
    return missing


def pytest_configure(config):
    if _requiring_extras():
        missing = missing_extras()
        if missing:
            listed = "; ".join(f"[{extra}] {', '.join(reqs)}" for extra, reqs in sorted(missing.items()))
            raise pytest.UsageError(
                f"{REQUIRE_EXTRAS}=1 but optional dependencies are not installed: {listed}. "
                "Install them (.ci/run installs .[all,mlflow]) or unset the variable."
            )


def _skip_reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_missing_extra_skip(report):
    """Turn a skip for a missing optional package into a failure (under PTYCHOLIB_REQUIRE_EXTRAS)."""
    if report.skipped and not hasattr(report, "wasxfail") and _requiring_extras():
        reason = _skip_reason(report)
        if MISSING_EXTRA.search(reason):
            report.outcome = "failed"
            report.longrepr = f"{REQUIRE_EXTRAS}=1: skipped for a missing optional package, which CI must not do: {reason}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    return _fail_missing_extra_skip((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    return _fail_missing_extra_skip((yield))
