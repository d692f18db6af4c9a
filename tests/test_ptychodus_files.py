"""ptycholib.ptychodus.files: ptychodus's files read with numpy/h5py alone (no ptychodus import).

The files are written here with numpy/h5py exactly as ptychodus 1.7.0 writes them; the last test
checks, when ptychodus is installed, that its own readers accept them and agree on positions.
"""

import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest

from ptycholib.ptychodus import files

N = 64


def _assert_same(a, b):
    for name in ("amplitudes", "x_px", "y_px", "probe", "obj", "scan_index", "bad_pixels", "object_index"):
        left, right = getattr(a, name), getattr(b, name)
        if left is None or right is None:
            assert left is None and right is None, name
        else:
            assert left.dtype == right.dtype, name
            np.testing.assert_array_equal(left, right, err_msg=name)


# ------------------------------------------------------------------------------------------------
# ptychodus layouts, written here with numpy/h5py exactly as ptychodus 1.7.0 writes them


def _ptychodus_scene(rng, n_patterns=12, shape=(90, 110)):
    """Counts, positions in our object pixels, probe modes, object and bad pixels."""
    rows, cols = shape
    x_ours = rng.uniform(N // 2, cols - N // 2, n_patterns)
    y_ours = rng.uniform(N // 2, rows - N // 2, n_patterns)
    counts = rng.poisson(50.0, size=(n_patterns, N, N)).astype(np.uint16)
    bad = np.zeros((N, N), bool)
    bad[3, 4] = bad[10, 11] = True
    probe_modes = (rng.standard_normal((2, N, N)) + 1j * rng.standard_normal((2, N, N))).astype(np.complex128)
    probe_modes[1] *= 0.3
    obj = np.exp(1j * rng.uniform(0, 1, shape)).astype(np.complex128)
    return counts, x_ours, y_ours, probe_modes, obj, bad


def test_ptychodus_training_npz(rng, tmp_path):
    counts, x_ours, y_ours, probe_modes, obj, bad = _ptychodus_scene(rng)
    x_theirs, y_theirs = x_ours - 0.5, y_ours - 0.5  # window centre at (N-1)/2 instead of N//2
    path = tmp_path / "train_data.npz"
    np.savez(
        path,
        xcoords=x_theirs, ycoords=y_theirs, xcoords_start=x_theirs, ycoords_start=y_theirs,
        diff3d=counts, bad_pixels=bad, probeGuess=probe_modes, objectGuess=obj,
        scan_index=np.zeros(len(counts), dtype=int),
    )  # fmt: skip
    loaded = files.load_ptychodus_npz(path)
    expected = np.sqrt(counts)
    expected[:, bad] = 0  # bad pixels: zeroed by PtychoData, left out of the loss
    np.testing.assert_allclose(loaded.amplitudes, expected, rtol=1e-6)
    np.testing.assert_allclose(loaded.x_px, x_ours)
    np.testing.assert_allclose(loaded.y_px, y_ours)
    np.testing.assert_array_equal(loaded.probe, probe_modes[0].astype(np.complex64))
    np.testing.assert_array_equal(loaded.bad_pixels, bad)
    assert loaded.obj.shape == obj.shape and loaded.metadata["probe_modes"] == 2
    assert loaded.metadata["measurement"] == "amplitude"


def test_ptychodus_pixel_convention():
    assert files.ptychodus_px_to_object_px(np.array([31.5]), np.array([0.0]), 64)[0].tolist() == [32.0]
    assert files.ptychodus_px_to_object_px(np.array([16.0]), np.array([0.0]), 33)[0].tolist() == [16.0]


def _write_ptychodus_h5(folder, counts, x_m, y_m, probe_modes, obj, bad, *, pixel_m, center_m, indexes=None, position_indexes=None):
    diffraction = folder / "diffraction.h5"
    product = folder / "product.h5"
    indexes = np.arange(len(counts)) if indexes is None else indexes
    position_indexes = np.arange(len(x_m)) if position_indexes is None else position_indexes
    with h5py.File(diffraction, "w") as h5:
        h5.create_dataset("indexes", data=indexes, compression="lzf")
        patterns = h5.create_dataset("patterns", data=counts, compression="lzf")
        patterns.attrs["detector_pixel_width_m"] = 75e-6
        patterns.attrs["detector_pixel_height_m"] = 75e-6
        h5.create_dataset("bad_pixels", data=bad, compression="lzf")
    with h5py.File(product, "w") as h5:
        for key, value in {
            "name": "scan", "comments": "", "detector_object_distance_m": 2.0, "photon_energy_eV": 10000.0,
            "probe_photon_count": 0.0, "exposure_time_s": 0.0, "mass_attenuation_m2_per_kg": 0.0,
            "tomography_angle_deg": 0.0, "focus_object_distance_m": 0.0, "tilt_angle_deg": 0.0, "far_field": True,
        }.items():  # fmt: skip
            h5.attrs[key] = value
        h5.create_dataset("probe_position_indexes", data=position_indexes)
        h5.create_dataset("probe_position_x_m", data=x_m)
        h5.create_dataset("probe_position_y_m", data=y_m)
        probe = h5.create_dataset("probe", data=probe_modes[None])  # (opr, incoherent, h, w)
        probe.attrs["pixel_width_m"] = pixel_m
        probe.attrs["pixel_height_m"] = pixel_m
        layers = h5.create_dataset("object", data=obj[None])  # (layers, rows, cols)
        layers.attrs["center_x_m"], layers.attrs["center_y_m"] = center_m
        layers.attrs["pixel_width_m"] = pixel_m
        layers.attrs["pixel_height_m"] = pixel_m
        h5.create_dataset("object_layer_spacing_m", data=np.zeros(0))
        h5.create_dataset("loss_epochs", data=np.zeros(0, int))
        h5.create_dataset("loss_values", data=np.zeros(0))
    return diffraction, product


def _metres(x_ours, y_ours, shape, pixel_m, center_m):
    rows, cols = shape
    x_m = (x_ours - 0.5 - (cols - 1) / 2) * pixel_m + center_m[0]
    y_m = (y_ours - 0.5 - (rows - 1) / 2) * pixel_m + center_m[1]
    return x_m, y_m


def test_ptychodus_h5_pair(rng, tmp_path):
    counts, x_ours, y_ours, probe_modes, obj, bad = _ptychodus_scene(rng)
    pixel_m, center_m = 20e-9, (1e-6, -2e-6)
    x_m, y_m = _metres(x_ours, y_ours, obj.shape, pixel_m, center_m)
    paths = _write_ptychodus_h5(tmp_path, counts, x_m, y_m, probe_modes, obj, bad, pixel_m=pixel_m, center_m=center_m)
    loaded = files.load_ptychodus_h5(*paths)
    np.testing.assert_allclose(loaded.x_px, x_ours, atol=1e-9)
    np.testing.assert_allclose(loaded.y_px, y_ours, atol=1e-9)
    expected = np.sqrt(counts.astype(np.float64))
    expected[:, bad] = 0  # unmeasured pixels read 0; the mask says which
    np.testing.assert_allclose(loaded.amplitudes, expected, rtol=1e-6)
    np.testing.assert_array_equal(loaded.bad_pixels, bad)
    np.testing.assert_array_equal(loaded.probe, probe_modes[0].astype(np.complex64))
    assert loaded.metadata["photon_energy_eV"] == 10000.0 and loaded.metadata["object_pixel_size_m"] == [pixel_m] * 2
    in_batches = files.load_ptychodus_h5(*paths, batch_size=5)
    _assert_same(loaded, in_batches)
    batches = list(files.iter_ptychodus_h5(*paths, batch_size=5))
    assert [b.n_positions for b in batches] == [5, 5, 2]
    assert batches[1].metadata["pattern_range"] == [5, 10]
    np.testing.assert_array_equal(np.concatenate([b.amplitudes for b in batches]), loaded.amplitudes)
    np.testing.assert_array_equal(np.concatenate([b.x_px for b in batches]), loaded.x_px)


def test_ptychodus_h5_pairs_by_index(rng, tmp_path):
    counts, x_ours, y_ours, probe_modes, obj, bad = _ptychodus_scene(rng, n_patterns=6)
    pixel_m, center_m = 10e-9, (0.0, 0.0)
    x_m, y_m = _metres(x_ours, y_ours, obj.shape, pixel_m, center_m)
    # positions listed in reverse with index 2 twice; pattern index 99 has no position
    order = np.array([5, 4, 3, 2, 2, 1, 0])
    position_indexes = order.copy()
    x_listed, y_listed = x_m[order], y_m[order]
    x_listed[3] += 2 * pixel_m  # the two entries of index 2 average to the true position
    x_listed[4] -= 2 * pixel_m
    indexes = np.array([0, 1, 2, 3, 99, 5])
    paths = _write_ptychodus_h5(tmp_path, counts, x_listed, y_listed, probe_modes, obj, bad, pixel_m=pixel_m,
                                center_m=center_m, indexes=indexes, position_indexes=position_indexes)  # fmt: skip
    with pytest.warns(UserWarning, match=r"1 of 6 patterns .* no position .*\[99\]"):
        loaded = files.load_ptychodus_h5(*paths)
    keep = [0, 1, 2, 3, 5]
    assert loaded.n_positions == 5
    np.testing.assert_allclose(loaded.x_px, x_ours[keep], atol=1e-9)
    np.testing.assert_allclose(loaded.y_px, y_ours[keep], atol=1e-9)


def test_ptychodus_h5_errors(rng, tmp_path):
    counts, x_ours, y_ours, probe_modes, obj, bad = _ptychodus_scene(rng, n_patterns=3)
    x_m, y_m = _metres(x_ours, y_ours, obj.shape, 1e-8, (0.0, 0.0))
    diffraction, product = _write_ptychodus_h5(tmp_path, counts, x_m, y_m, probe_modes, obj, bad, pixel_m=1e-8, center_m=(0.0, 0.0))
    with h5py.File(product, "a") as h5:
        h5["probe"].attrs["pixel_width_m"] = 2e-8
    with pytest.raises(ValueError, match="resample the probe"):
        files.load_ptychodus_h5(diffraction, product)
    with h5py.File(product, "a") as h5:
        del h5["object"]
    with pytest.raises(ValueError, match="product.h5 has no 'object' dataset"):
        files.load_ptychodus_h5(diffraction, product)
    with pytest.raises(ValueError, match="batch_size"):
        next(files.iter_ptychodus_h5(diffraction, product, batch_size=0))


def test_ptychodus_reads_our_test_files_and_agrees_on_positions(rng, tmp_path):
    """ptychodus's own readers accept the files above, and its pixel mapping + 0.5 is ours."""
    pytest.importorskip("ptychodus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ptychodus.api.io import load_diffraction_data, load_product
    counts, x_ours, y_ours, probe_modes, obj, bad = _ptychodus_scene(rng, n_patterns=4)
    pixel_m, center_m = 15e-9, (3e-7, 1e-7)
    x_m, y_m = _metres(x_ours, y_ours, obj.shape, pixel_m, center_m)
    paths = _write_ptychodus_h5(tmp_path, counts, x_m, y_m, probe_modes, obj, bad, pixel_m=pixel_m, center_m=center_m)
    assert load_diffraction_data(paths[0]).get_pixel_geometry().width_m == 75e-6
    product = load_product(paths[1])
    geometry = product.object_.get_geometry()
    theirs_x = geometry.map_probe_positions_to_object_x_px(product.probe_positions)
    theirs_y = geometry.map_probe_positions_to_object_y_px(product.probe_positions)
    loaded = files.load_ptychodus_h5(*paths)
    np.testing.assert_allclose(loaded.x_px, theirs_x + 0.5, atol=1e-9)
    np.testing.assert_allclose(loaded.y_px, theirs_y + 0.5, atol=1e-9)


def test_readers_and_settings_work_without_the_ptychodus_package(tmp_path):
    """With ``ptychodus`` unimportable, the package imports, its readers and write_settings run, and
    the names that need ptychodus raise an ImportError that says how to install it."""
    code = f"""
import sys
sys.modules["ptychodus"] = None  # as if not installed
import numpy as np
import ptycholib.ptychodus as adapter
from ptycholib.ptychodus import files
assert files.ptychodus_px_to_object_px(np.array([31.5]), np.array([0.0]), 64)[0].tolist() == [32.0]
adapter.write_settings({str(tmp_path / "settings.ini")!r}, algorithm="ptycholib_torch")
for name in ("PtycholibReconstructorLibrary", "run_batch", "ptycho_data_from_input"):
    try:
        getattr(adapter, name)
    except ImportError as error:
        assert "pip install" in str(error), error
    else:
        raise AssertionError(name + " did not need ptychodus")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert (tmp_path / "settings.ini").is_file()


def test_package_import_is_cheap_and_every_public_name_resolves():
    code = ("import sys, ptycholib.ptychodus as p; "
            "print(sorted(m for m in ('ptychodus', 'ptycholib.workflow', 'torch', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    pytest.importorskip("ptychodus")
    import ptycholib.ptychodus as adapter

    assert [name for name in adapter.__all__ if not hasattr(adapter, name)] == []
    assert set(adapter.__all__) <= set(dir(adapter))
