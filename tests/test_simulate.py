"""ptycholib.simulate: objects, probes, scans, the noiseless physics against forward.py, dose, seeds, CLI."""

import numpy as np
import pytest

from ptycholib import data, forward, grouping, simulate
from ptycholib.cli import main

N = 64


# ------------------------------------------------------------------------------------------------
# objects and probes


@pytest.mark.parametrize("kind", simulate.OBJECT_KINDS)
def test_objects_have_amplitude_and_phase_in_range(kind):
    obj = simulate.make_object(kind, (70, 90), 3, amplitude_range=(0.3, 0.9), phase_range=(-0.5, 1.5))
    assert obj.shape == (70, 90) and obj.dtype == np.complex64
    amplitude, phase = np.abs(obj), np.angle(obj)
    assert amplitude.min() == pytest.approx(0.3, abs=1e-5) and amplitude.max() == pytest.approx(0.9, abs=1e-5)
    assert phase.min() == pytest.approx(-0.5, abs=1e-5) and phase.max() == pytest.approx(1.5, abs=1e-5)
    assert np.corrcoef(amplitude.ravel(), phase.ravel())[0, 1] < 0.9  # two independent textures
    np.testing.assert_array_equal(obj, simulate.make_object(kind, (70, 90), 3, amplitude_range=(0.3, 0.9), phase_range=(-0.5, 1.5)))
    assert not np.array_equal(obj, simulate.make_object(kind, (70, 90), 4, amplitude_range=(0.3, 0.9), phase_range=(-0.5, 1.5)))
    amplitude_only = simulate.make_object(kind, (70, 90), 3, amplitude_range=(0.3, 0.9), amplitude_only=True)
    assert not np.angle(amplitude_only).any()
    np.testing.assert_allclose(np.abs(amplitude_only), amplitude, rtol=1e-6)


def test_object_errors():
    with pytest.raises(ValueError, match="kind='stars' is not known; use one of 'lines', 'grf', 'dead_leaves'"):
        simulate.make_object("stars", (10, 10), 0)
    with pytest.raises(ValueError, match="n_lines applies only"):
        simulate.make_object("grf", (10, 10), 0, n_lines=5)
    with pytest.raises(ValueError, match="shape"):
        simulate.make_object("grf", (0, 10), 0)


@pytest.mark.parametrize("kind", simulate.PROBE_KINDS)
def test_probes_are_centred_with_unit_peak(kind):
    probe = simulate.make_probe(kind, N)
    assert probe.shape == (N, N) and probe.dtype == np.complex64
    assert np.abs(probe).max() == pytest.approx(1.0)
    power = np.abs(probe) ** 2
    coords = np.arange(N) - N // 2
    centroid = (power.sum(0) @ coords / power.sum(), power.sum(1) @ coords / power.sum())
    assert np.allclose(centroid, 0, atol=0.5)
    assert 8 < simulate.probe_diameter_px(probe) < N


def test_probe_options_and_errors():
    focused, defocused = simulate.make_probe("disk", N), simulate.make_probe("disk", N, defocus_rad=4.0)
    assert simulate.probe_diameter_px(defocused) > simulate.probe_diameter_px(focused)
    assert not np.allclose(simulate.make_probe("fzp", N, astigmatism_rad=1.0), simulate.make_probe("fzp", N))
    with pytest.raises(ValueError, match="diameter_px"):
        simulate.make_probe("disk", N, diameter_px=0)
    with pytest.raises(ValueError, match="not 'gaussian'"):
        simulate.make_probe("gaussian", N, coma_rad=1.0)
    assert simulate.linear_overlap(4, 20) == pytest.approx(0.8)


# ------------------------------------------------------------------------------------------------
# scans


def _windows_inside(x_px, y_px, shape):
    rows, cols = shape
    return (x_px - N // 2 >= 0).all() and (x_px - N // 2 + N <= cols).all() and (y_px - N // 2 >= 0).all() and (
        y_px - N // 2 + N <= rows
    ).all()


def test_raster_stays_on_canvas_on_whole_pixels():
    x_px, y_px = simulate.raster_positions((100, 130), N, step_px=6)
    assert _windows_inside(x_px, y_px, (100, 130))
    assert np.array_equal(x_px, np.round(x_px)) and np.array_equal(y_px, np.round(y_px))
    assert set(np.diff(np.unique(x_px))) == {6.0} and x_px.size == 12 * 7
    x_same, _ = simulate.raster_positions((100, 130), N, overlap=0.75, probe_diameter_px=24)
    np.testing.assert_array_equal(x_same, x_px)
    x_few, y_few = simulate.raster_positions((100, 130), N, step_px=6, n_positions=5)
    assert x_few.tolist() == x_px[:5].tolist() and (y_few == y_px[0]).all()


def test_raster_jitter_and_errors():
    x_px, y_px = simulate.raster_positions((100, 130), N, step_px=6, jitter_px=0.7, rng=1)
    assert _windows_inside(x_px, y_px, (100, 130)) and not np.array_equal(x_px, np.round(x_px))
    np.testing.assert_array_equal(x_px, simulate.raster_positions((100, 130), N, step_px=6, jitter_px=0.7, rng=1)[0])
    with pytest.raises(ValueError, match="cannot hold a 64 px window"):
        simulate.raster_positions((60, 130), N)
    with pytest.raises(ValueError, match="either step_px or overlap"):
        simulate.raster_positions((100, 130), N, step_px=4, overlap=0.5, probe_diameter_px=20)
    with pytest.raises(ValueError, match="needs probe_diameter_px"):
        simulate.raster_positions((100, 130), N, overlap=0.5)
    with pytest.raises(ValueError, match="n_positions=999"):
        simulate.raster_positions((100, 130), N, n_positions=999)


@pytest.mark.parametrize("scan, n_positions, jitter", [("raster", 40, 0.0), ("raster", 23, 0.5), ("spiral", 50, 0.0)])
def test_canvas_shape_fits_the_scan(scan, n_positions, jitter):
    shape = simulate.scan_canvas_shape(n_positions, N, step_px=5, scan=scan, jitter_px=jitter)
    if scan == "raster":
        x_px, y_px = simulate.raster_positions(shape, N, step_px=5, jitter_px=jitter, n_positions=n_positions, rng=0)
    else:
        x_px, y_px = simulate.spiral_positions(shape, N, n_positions, step_px=5)
    assert x_px.size == n_positions and _windows_inside(x_px, y_px, shape)


def test_spiral_spacing_and_errors():
    x_px, y_px = simulate.spiral_positions((200, 200), N, 60, step_px=5)
    from scipy.spatial import cKDTree

    nearest = cKDTree(np.stack([x_px, y_px], 1)).query(np.stack([x_px, y_px], 1), k=2)[0][:, 1]
    assert 3 < np.median(nearest) < 7
    with pytest.raises(ValueError, match="scan_canvas_shape"):
        simulate.spiral_positions((80, 80), N, 500, step_px=5)


# ------------------------------------------------------------------------------------------------
# physics


def _forward_intensity(obj, probe, x_px, y_px):
    return forward.far_field_amplitude(forward.extract_patches(obj, x_px, y_px, probe.shape[-1]) * probe) ** 2


@pytest.mark.parametrize("subpixel", [False, True])
def test_noiseless_patterns_match_forward_model(subpixel):
    obj = simulate.make_object("dead_leaves", (90, 110), 0)
    probe = simulate.make_probe("fzp", N)
    x_px, y_px = simulate.raster_positions((90, 110), N, step_px=7)
    if subpixel:
        x_px, y_px = x_px + 0.37, y_px - 0.21  # bilinear views, one window slightly off the canvas
    intensity = simulate.far_field_intensity(obj, probe, x_px, y_px, batch_size=7, workers=2)
    reference = _forward_intensity(obj, probe, x_px, y_px)
    assert np.abs(intensity - reference).max() <= 1e-5 * reference.max()
    expected = simulate.simulate_counts(obj, probe, x_px, y_px, 1e6, 0, noise=False)
    scaled = reference * (1e6 / reference.sum(axis=(1, 2)).mean())
    assert np.abs(expected - scaled).max() <= 1e-5 * scaled.max()
    assert expected.sum(axis=(1, 2)).mean() == pytest.approx(1e6, rel=1e-5)


def test_odd_pattern_size_uses_fftshift():
    obj = simulate.make_object("grf", (60, 60), 0)
    probe = simulate.make_probe("gaussian", 33)
    x_px, y_px = np.array([20.0, 30.5]), np.array([25.0, 31.0])
    intensity = simulate.far_field_intensity(obj, probe, x_px, y_px)
    reference = _forward_intensity(obj, probe, x_px, y_px)
    assert np.abs(intensity - reference).max() <= 1e-5 * reference.max()


def test_mean_counts_equal_dose_within_poisson_error():
    obj = simulate.make_object("lines", (100, 120), 0)
    probe = simulate.make_probe("disk", N)
    x_px, y_px = simulate.raster_positions((100, 120), N, step_px=4)
    nphotons = 1e4
    counts = simulate.simulate_counts(obj, probe, x_px, y_px, nphotons, 7)
    assert counts.dtype == np.int64 and (counts >= 0).all()
    error = np.sqrt(nphotons / len(counts))  # the total is Poisson with mean n_patterns * nphotons
    assert abs(counts.sum(axis=(1, 2)).mean() - nphotons) < 4 * error
    expected = simulate.simulate_counts(obj, probe, x_px, y_px, nphotons, 7, noise=False)
    bright = expected > 20
    assert np.mean((counts[bright] - expected[bright]) ** 2 / expected[bright]) == pytest.approx(1.0, abs=0.1)


def test_dataset_amplitudes_are_sqrt_of_the_same_counts():
    obj = simulate.make_object("grf", (80, 100), 0)
    probe = simulate.make_probe("gaussian", N)
    x_px, y_px = simulate.raster_positions((80, 100), N, step_px=5)
    counts = simulate.simulate_counts(obj, probe, x_px, y_px, 1e5, 11, batch_size=3)
    dataset = simulate.simulate_dataset(obj, probe, x_px, y_px, 1e5, 11, batch_size=64)
    np.testing.assert_array_equal(dataset.amplitudes, np.sqrt(counts).astype(np.float32))
    assert dataset.metadata["nphotons"] == 1e5 and dataset.metadata["noise"] == "poisson"


def test_detector_mask_blocks_pixels():
    mask = simulate.make_detector_mask(N, beamstop_radius_px=3, bad_pixel_fraction=0.01, rng=0)
    assert mask[N // 2, N // 2] and mask[N // 2, N // 2 + 3] and not mask[N // 2, N // 2 + 4]
    assert mask.sum() <= 29 + round(0.01 * N * N)
    obj = simulate.make_object("grf", (80, 80), 0)
    dataset = simulate.simulate_dataset(obj, simulate.make_probe("disk", N), np.array([40.0]), np.array([40.0]), 1e6, 0,
                                        detector_mask=mask)  # fmt: skip
    assert not dataset.amplitudes[:, mask].any() and dataset.amplitudes[:, ~mask].any()
    np.testing.assert_array_equal(dataset.bad_pixels, mask)
    with pytest.raises(ValueError, match="bad_pixel_fraction"):
        simulate.make_detector_mask(N, bad_pixel_fraction=1.5)


def test_simulation_errors():
    obj, probe = np.ones((80, 80), np.complex64), simulate.make_probe("disk", N)
    with pytest.raises(ValueError, match="nphotons must be > 0"):
        simulate.simulate_counts(obj, probe, np.array([40.0]), np.array([40.0]), 0, 0)
    with pytest.raises(ValueError, match="every exit wave is zero"):
        simulate.simulate_counts(obj * 0, probe, np.array([40.0]), np.array([40.0]), 1e6, 0)
    with pytest.raises(ValueError, match="empty"):
        simulate.simulate_counts(obj, probe, np.array([]), np.array([]), 1e6, 0)


# ------------------------------------------------------------------------------------------------
# train/test sets and determinism


def test_train_test_are_bit_identical_for_a_seed_and_use_two_objects(tiny_train_test):
    train, test = tiny_train_test
    again_train, again_test = simulate.simulate_train_test(n_train=36, n_test=16, nphotons=1e6, step_px=4, seed=0, workers=2)
    for first, second in ((train, again_train), (test, again_test)):
        for name in ("amplitudes", "x_px", "y_px", "probe", "obj"):
            np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert train.obj.shape != test.obj.shape or not np.array_equal(train.obj, test.obj)
    assert np.array_equal(train.x_px, np.round(train.x_px))
    assert train.metadata["split"] == "train" and train.metadata["seed"] == 0
    other_train, _ = simulate.simulate_train_test(n_train=36, n_test=25, nphotons=1e6, step_px=4, seed=0)
    np.testing.assert_array_equal(other_train.amplitudes, train.amplitudes)  # train ignores the test size
    different, _ = simulate.simulate_train_test(n_train=36, n_test=16, nphotons=1e6, step_px=4, seed=1)
    assert not np.array_equal(different.amplitudes, train.amplitudes)


def test_train_test_options():
    train, test = simulate.simulate_train_test(n_train=20, n_test=10, object_kind="dead_leaves", probe_kind="fzp",
                                               scan="spiral", nphotons=1e5, beamstop_radius_px=2, seed=3)  # fmt: skip
    assert train.bad_pixels is not None and train.bad_pixels[N // 2, N // 2]
    assert test.n_positions == 10 and train.metadata["scan"] == "spiral"
    with pytest.raises(ValueError, match="n_train must be a positive integer"):
        simulate.simulate_train_test(n_train=0)
    with pytest.raises(ValueError, match="jitter_px applies to scan='raster'"):
        simulate.simulate_train_test(scan="spiral", jitter_px=1.0)


def test_several_training_objects_are_tiles_of_one_mosaic():
    train, test = simulate.simulate_train_test(n_train=31, n_test=9, nphotons=1e6, jitter_px=0.4, seed=5, n_objects=3)
    assert train.n_positions == 31 and test.n_positions == 9 and test.object_index is None
    assert train.object_index.dtype == np.int64 and np.bincount(train.object_index).tolist() == [11, 10, 10]
    assert train.metadata["n_objects"] == 3 and test.metadata["n_objects"] == 1
    rows, cols = train.obj.shape
    tile_cols = (cols - 2 * (N // 2)) // 3  # three equal tiles, two gaps of N // 2 px
    assert 3 * tile_cols + 2 * (N // 2) == cols
    lefts = [k * (tile_cols + N // 2) for k in range(3)]
    tiles = [train.obj[:, left : left + tile_cols] for left in lefts]
    for a in range(3):  # three distinct objects
        for b in range(a + 1, 3):
            assert not np.allclose(tiles[a], tiles[b])
    for left in lefts[1:]:  # vacuum between the tiles
        assert (train.obj[:, left - N // 2 : left] == 1).all()
    for k, left in enumerate(lefts):  # every window inside its own tile
        own = train.object_index == k
        assert _windows_inside(train.x_px[own] - left, train.y_px[own], (rows, tile_cols))
    # a tile is what one object of its size would be: same texture statistics, amplitude in range
    assert all(0.2 - 1e-6 <= np.abs(tile).min() and np.abs(tile).max() <= 1 + 1e-6 for tile in tiles)
    groups = grouping.group_neighbors(train.x_px, train.y_px, 2, neighbor_count=7, seed=0,
                                      object_index=train.object_index)  # fmt: skip
    members = train.object_index[groups.indices]
    assert (members == members[:, :1]).all()


def test_one_object_is_the_default_simulation(tiny_train_test):
    train, test = tiny_train_test
    one_train, one_test = simulate.simulate_train_test(n_train=36, n_test=16, nphotons=1e6, step_px=4, seed=0,
                                                       n_objects=1)  # fmt: skip
    for first, second in ((train, one_train), (test, one_test)):
        for name in ("amplitudes", "x_px", "y_px", "probe", "obj", "scan_index"):
            np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
        assert first.object_index is None and second.object_index is None
    with pytest.raises(ValueError, match="n_objects must be a positive integer"):
        simulate.simulate_train_test(n_train=4, n_test=4, n_objects=0)
    with pytest.raises(ValueError, match="n_objects=5 exceeds n_train=4"):
        simulate.simulate_train_test(n_train=4, n_test=4, n_objects=5)


def test_several_objects_with_a_spiral_scan():
    train, _ = simulate.simulate_train_test(n_train=20, n_test=4, nphotons=1e6, scan="spiral", seed=1, n_objects=2)
    assert np.bincount(train.object_index).tolist() == [10, 10]
    first, second = (train.x_px[train.object_index == k] for k in (0, 1))
    assert first.max() + N // 2 <= second.min() - N // 2  # no window reaches across the gap


# ------------------------------------------------------------------------------------------------
# command line


def test_simulate_command_writes_train_and_test(tmp_path, capsys):
    status = main(["simulate", "--object", "grf", "--nphotons", "1e5", "--n-train", "9", "--n-test", "4",
                   "--seed", "2", "--out", str(tmp_path / "sim")])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "train.npz: 9 patterns" in printed and "test.npz: 4 patterns" in printed
    train = data.load_npz(tmp_path / "sim" / "train.npz")
    assert train.n_positions == 9 and train.metadata["object_kind"] == "grf" and train.metadata["seed"] == 2


def test_simulate_command_with_several_objects(tmp_path, capsys):
    status = main(["simulate", "--nphotons", "1e5", "--n-train", "18", "--n-test", "4", "--n-objects", "2",
                   "--seed", "2", "--out", str(tmp_path / "sim")])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "train.npz: 18 patterns" in printed and "2 lines objects on a mosaic" in printed
    train = data.load_npz(tmp_path / "sim" / "train.npz")
    test = data.load_npz(tmp_path / "sim" / "test.npz")
    assert train.object_index.tolist() == [0] * 9 + [1] * 9 and test.object_index is None
    assert train.metadata["n_objects"] == 2
    assert main(["simulate", "--n-train", "3", "--n-objects", "4", "--out", str(tmp_path)]) == 2
    assert "n_objects=4 exceeds n_train=3" in capsys.readouterr().err


def test_simulate_command_bad_input_and_help(tmp_path, capsys):
    assert main(["simulate", "--n-train", "0", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ptycholib simulate: error: n_train must be a positive integer") and "\n" not in error
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    shown = capsys.readouterr().out
    for option in ("--object", "--probe", "--nphotons", "--n-train", "--n-test", "--seed", "--out", "--step-px",
                   "--scan", "--jitter-px", "--beamstop-radius-px", "--bad-pixel-fraction", "--noiseless", "--n-objects"):
        assert option in shown


def test_poisson_counts_bit_identical_for_seed_whatever_threads_and_batches():
    expected = np.random.default_rng(3).random((150, 8, 8)) * [[1e-2], [1e1], [1e3], [1e6], [5.0], [0.5], [2e2], [7.0]]
    one = simulate.poisson_counts(expected, 5, workers=1)
    two = simulate.poisson_counts(expected, 5, workers=2)
    assert one.dtype == np.int64 and np.array_equal(one, two)
    again = simulate.poisson_counts(expected, np.random.default_rng(5), workers=3)
    assert np.array_equal(one, again)
    assert not np.array_equal(one, simulate.poisson_counts(expected, 6))  # another seed
    assert not np.array_equal(one, simulate.poisson_counts(expected, 5, chunk_size=32))  # chunking is part of it
    amplitudes = simulate.poisson_counts(expected, 5, workers=2, out=np.empty(expected.shape, np.float32), amplitude=True)
    assert np.array_equal(amplitudes, np.sqrt(one).astype(np.float32))
    with pytest.raises(ValueError, match="chunk_size"):
        simulate.poisson_counts(expected, 5, chunk_size=0)


def test_simulation_identical_across_workers_and_batch_sizes():
    obj = simulate.make_object("lines", (120, 120), 0)
    probe = simulate.make_probe("disk", N)
    x_px, y_px = simulate.raster_positions((120, 120), N, step_px=6.0)
    first = simulate.simulate_dataset(obj, probe, x_px, y_px, 1e7, 2, batch_size=256, workers=1, poisson_chunk=64)
    second = simulate.simulate_dataset(obj, probe, x_px, y_px, 1e7, 2, batch_size=7, workers=2, poisson_chunk=64)
    assert len(x_px) > simulate.POISSON_CHUNK  # several chunks
    assert np.array_equal(first.amplitudes, second.amplitudes)
    single = simulate.simulate_dataset(obj, probe, x_px, y_px, 1e7, 2, batch_size=7, workers=2)
    again = simulate.simulate_dataset(obj, probe, x_px, y_px, 1e7, 2, batch_size=300, workers=1)
    assert np.array_equal(single.amplitudes, again.amplitudes)  # the default: one stream, also independent of them
    assert not np.array_equal(single.amplitudes, first.amplitudes)  # other draws of the same distribution


def test_default_noise_is_rngs_own_stream():
    """The default draws are ``rng.poisson`` of the expected counts in pattern order (the data of earlier versions)."""
    obj = simulate.make_object("lines", (100, 100), 0)
    probe = simulate.make_probe("disk", N)
    x_px, y_px = simulate.raster_positions((100, 100), N, step_px=8.0)
    counts = simulate.simulate_counts(obj, probe, x_px, y_px, 1e6, 4, batch_size=3)
    expected = simulate.simulate_counts(obj, probe, x_px, y_px, 1e6, 4, noise=False)
    assert np.array_equal(counts, np.random.default_rng(4).poisson(expected))


@pytest.mark.parametrize("lam", [0.3, 4.0, 30.0, 2.5e4])
def test_poisson_counts_are_poisson_distributed(lam):
    from scipy import stats

    n = 200_000
    counts = simulate.poisson_counts(np.full((n // 100, 10, 10), lam), 1, workers=2).ravel()
    # moments: the mean within 5 standard errors, the variance within 5 of its standard errors
    assert abs(counts.mean() - lam) < 5 * np.sqrt(lam / n)
    var_se = np.sqrt((2 * lam**2 + lam) / n)
    assert abs(counts.var() - lam) < 5 * var_se
    # chi-square over bins of >= 50 expected counts each
    low, high = stats.poisson.ppf([1e-4, 1 - 1e-4], lam)
    edges = np.unique(np.linspace(low, high + 1, 40).astype(np.int64))
    observed = np.histogram(counts, bins=np.r_[-0.5, edges[1:-1] - 0.5, np.inf])[0]
    probabilities = np.diff(np.r_[0.0, stats.poisson.cdf(edges[1:-1] - 1, lam), 1.0])
    keep = probabilities * n >= 50
    merged_obs = np.r_[observed[keep], observed[~keep].sum()]
    merged_exp = np.r_[probabilities[keep], probabilities[~keep].sum()] * n
    merged_obs, merged_exp = merged_obs[merged_exp > 0], merged_exp[merged_exp > 0]
    p_value = stats.chisquare(merged_obs, merged_exp * merged_obs.sum() / merged_exp.sum()).pvalue
    assert p_value > 1e-4
