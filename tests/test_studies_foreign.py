"""Scans from ptychodus's own simulator, read through its files (ptycholib.studies.foreign)."""

import h5py
import numpy as np
import pytest

pytest.importorskip("ptychodus")
pytestmark = pytest.mark.filterwarnings("ignore:'xdrlib' is deprecated:DeprecationWarning")  # a ptychodus plugin

from ptycholib import data as data_module
from ptycholib import simulate
from ptycholib.ptychodus import load_ptychodus_h5
from ptycholib.studies import foreign


def _resimulation_error(scan, probe, shift_px=0.0):
    """Relative error of our noiseless far field of (truth, probe) against the loaded amplitudes, one scale fitted."""
    predicted = np.sqrt(simulate.far_field_intensity(scan.obj, probe, scan.x_px + shift_px, scan.y_px + shift_px))
    predicted = predicted.astype(np.float64)
    measured = scan.amplitudes.astype(np.float64)
    scale = np.sum(predicted * measured) / np.sum(predicted**2)
    return np.linalg.norm(scale * predicted - measured) / np.linalg.norm(measured)


def test_command_line_writes_ptychodus_files_and_our_npz(tmp_path, capsys):
    out = tmp_path / "foreign"
    assert foreign.main(["--out", str(out), "--n-side-train", "8", "--n-side-test", "6"]) == 0
    printed = capsys.readouterr().out
    assert "probe diameter" in printed and "object amplitude" in printed
    for name, n_side in (("train", 8), ("test", 6)):
        assert (out / name / "diffraction.h5").is_file() and (out / name / "product.h5").is_file()
        scan = data_module.load_npz(out / f"{name}.npz")  # validates on load
        assert scan.amplitudes.shape == (n_side**2, 64, 64)
        assert scan.obj.shape == ((n_side - 1) * 4 + 64,) * 2
        assert scan.metadata["generator"] == "ptychodus.api.simulate" and scan.metadata["split"] == name
        assert scan.metadata["mean_counts_per_pattern"] == pytest.approx(1e9, rel=1e-3)
    train, test = (data_module.load_npz(out / f"{name}.npz") for name in ("train", "test"))
    assert train.metadata["seed"] != test.metadata["seed"]


def test_truth_probe_and_positions_share_our_grid(tmp_path):
    scan = foreign.simulate_ptychodus_scan(tmp_path / "scan", n_side=7, seed=3, photons_per_pattern=1e9)
    from_files = load_ptychodus_h5(tmp_path / "scan" / "diffraction.h5", tmp_path / "scan" / "product.h5")
    np.testing.assert_array_equal(scan.amplitudes, from_files.amplitudes)
    np.testing.assert_array_equal(scan.obj, from_files.obj)
    n = scan.patch_size
    rows, cols = scan.obj.shape
    # whole-pixel window centres, every window on the canvas, touching its edges
    np.testing.assert_array_equal(scan.x_px, np.round(scan.x_px))
    assert scan.x_px.min() - n // 2 == 0 and scan.x_px.max() + n // 2 == cols
    assert scan.y_px.min() - n // 2 == 0 and scan.y_px.max() + n // 2 == rows
    with h5py.File(tmp_path / "scan" / "diffraction.h5", "r") as h5file:  # counts as a detector gives them
        assert h5file["patterns"].dtype == np.uint32
    assert foreign.object_contrast(scan)["amplitude_std"] > 0.05
    assert 15 < simulate.probe_diameter_px(scan.probe) < 35

    # with ptychodus's quadratic phase folded in, only Poisson noise is left (~0.1 % at 1e9 photons);
    # the file's probe as is: ~0.25 %; half a pixel off: ~7 %
    exact = _resimulation_error(scan, foreign.fresnel_probe(scan))
    assert exact < 2e-3, exact
    assert _resimulation_error(scan, scan.probe) < 1e-2
    for wrong in (-0.5, 0.5):
        assert _resimulation_error(scan, foreign.fresnel_probe(scan), wrong) > 10 * exact


def test_noiseless_patterns_of_the_written_truth_match_our_forward_model(tmp_path):
    from ptychodus.api.io import load_product
    from ptychodus.api.simulate.diffraction import generate_diffraction_data

    scan = foreign.simulate_ptychodus_scan(tmp_path / "scan", n_side=4, seed=5)
    expected = np.sqrt(generate_diffraction_data(load_product(tmp_path / "scan" / "product.h5")).get_patterns())
    noiseless = data_module.PtychoData(expected, scan.x_px, scan.y_px, scan.probe, scan.obj)
    assert _resimulation_error(noiseless, foreign.fresnel_probe(scan)) < 1e-5
