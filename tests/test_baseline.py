"""Iterative ePIE baselines on a tiny simulated scan (ptycholib.baseline, SPEC 7)."""

import sys

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptycholib import baseline, forward, metrics

PATCH = 16
SHAPE = (56, 60)


def _scan(subpixel, seed=0):
    rng = np.random.default_rng(seed)
    amplitude = 0.6 + 0.4 * gaussian_filter(rng.random(SHAPE), 1.5) / 0.6
    obj = np.clip(amplitude, 0, 1) * np.exp(1j * gaussian_filter(rng.standard_normal(SHAPE), 2))
    coords = np.arange(PATCH) - PATCH // 2
    radius2 = coords[:, None] ** 2 + coords[None, :] ** 2
    probe = np.exp(-radius2 / (2 * 3.0**2)) * np.exp(0.02j * radius2)
    x_px, y_px = (a.ravel() for a in np.meshgrid(np.arange(12, 48, 3.0), np.arange(12, 46, 3.0)))
    if subpixel:
        x_px = x_px + rng.uniform(-0.5, 0.5, x_px.size)
        y_px = y_px + rng.uniform(-0.5, 0.5, y_px.size)
    amplitudes = 7.0 * forward.far_field_amplitude(forward.extract_patches(obj, x_px, y_px, PATCH) * probe)
    mask = metrics.scanned_region_mask(x_px, y_px, SHAPE, 8)
    return obj, amplitudes, x_px, y_px, probe, mask


def _phase_rmse(result, obj, mask):
    return metrics.evaluate_reconstruction(result.obj, obj, mask=mask, register=False)["phase_rmse"]


def test_numpy_epie_error_drops_with_iterations():
    obj, amplitudes, x_px, y_px, probe, mask = _scan(subpixel=True)
    short = baseline.epie_numpy(amplitudes, x_px, y_px, probe, SHAPE, n_iterations=2)
    long = baseline.epie_numpy(amplitudes, x_px, y_px, probe, SHAPE, n_iterations=15)
    assert long.errors.shape == (15,) and np.all(np.diff(long.errors) < 0)
    assert long.errors[-1] < long.errors[0] / 20
    assert _phase_rmse(long, obj, mask) < 0.5 * _phase_rmse(short, obj, mask)
    assert _phase_rmse(long, obj, mask) < 0.05
    assert long.obj.shape == SHAPE and long.obj.dtype == np.complex64 and long.engine == "numpy"
    assert long.probe_scale == pytest.approx(7.0, rel=0.3)  # fitted from the data's energy


def test_numpy_epie_sequential_is_classical_epie():
    obj, amplitudes, x_px, y_px, probe, mask = _scan(subpixel=False)
    result = baseline.epie(amplitudes, x_px, y_px, 7.0 * probe, SHAPE, n_iterations=6, batch_size=1,
                           fit_probe_power=False)
    assert result.probe_scale == 1.0
    assert _phase_rmse(result, obj, mask) < 0.05


def test_ptylab_epie_on_whole_pixel_positions():
    pytest.importorskip("PtyLab")
    obj, amplitudes, x_px, y_px, probe, mask = _scan(subpixel=False)
    result = baseline.epie(amplitudes, x_px, y_px, probe, SHAPE, n_iterations=8, engine="ptylab")
    assert result.engine == "ptylab" and result.obj.shape == SHAPE and result.errors.shape == (8,)
    assert result.errors[-1] < result.errors[0] / 3
    # On whole-pixel positions PtyLab and our ePIE solve the same problem equally well: this also
    # proves the position and canvas mapping into PtyLab's geometry.
    assert _phase_rmse(result, obj, mask) < 0.05


def test_missing_ptylab_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "PtyLab", None)
    obj, amplitudes, x_px, y_px, probe, _ = _scan(subpixel=False)
    with pytest.raises(ImportError, match="pip install ptylab"):
        baseline.epie_ptylab(amplitudes, x_px, y_px, probe, SHAPE, n_iterations=1)


def test_bad_inputs_raise():
    obj, amplitudes, x_px, y_px, probe, _ = _scan(subpixel=False)
    with pytest.raises(ValueError, match="x_px must hold"):
        baseline.epie(amplitudes, x_px[:-1], y_px, probe, SHAPE)
    with pytest.raises(ValueError, match="probe has shape"):
        baseline.epie(amplitudes, x_px, y_px, probe[:8, :8], SHAPE)
    with pytest.raises(ValueError, match=">= 0"):
        baseline.epie(-amplitudes, x_px, y_px, probe, SHAPE)
    with pytest.raises(ValueError, match="engine"):
        baseline.epie(amplitudes, x_px, y_px, probe, SHAPE, engine="pty-chi")
    with pytest.raises(ValueError, match="n_iterations"):
        baseline.epie(amplitudes, x_px, y_px, probe, SHAPE, n_iterations=0)
