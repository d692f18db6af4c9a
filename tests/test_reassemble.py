"""Reassembly of object patches (ptycholib.reassemble and the backend-native versions, SPEC 7 and 8)."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptycholib import reassemble
from ptycholib.forward import extract_patches
from ptycholib.metrics import scanned_region_mask
from ptycholib.reassemble import reassemble_patches, scatter_add_patches

PATCH = 16
SHAPE = (50, 61)  # non-square: catches swapped axes



@pytest.fixture
def obj(rng):
    return (rng.uniform(0.5, 1.0, SHAPE) * np.exp(1j * rng.uniform(-np.pi, np.pi, SHAPE))).astype(np.complex64)


def _grid(stride=4, jitter=None, rng=None):
    x, y = np.meshgrid(np.arange(10, 52, stride, dtype=float), np.arange(9, 42, stride, dtype=float))
    x, y = x.ravel(), y.ravel()
    if jitter:
        x = x + rng.uniform(0, 1, x.size)
        y = y + rng.uniform(0, 1, y.size)
    return x, y


@pytest.mark.parametrize("weighting", ["crop", "probe"])
def test_integer_positions_reproduce_the_object(obj, rng, weighting):
    x, y = _grid()
    probe = rng.standard_normal((PATCH, PATCH)) + 1j * rng.standard_normal((PATCH, PATCH))
    out, weight = reassemble_patches(
        extract_patches(obj, x, y, PATCH), x, y, SHAPE, crop_size=8, weighting=weighting, probe=probe
    )
    covered = weight > 0
    assert covered.sum() > 0.4 * obj.size
    assert out.dtype == np.complex64 and weight.dtype == np.float32
    assert np.max(np.abs(out[covered] - obj[covered])) <= 1e-5 * np.max(np.abs(obj))
    assert np.all(out[~covered] == 0)


def test_crop_region_is_the_scanned_region_mask(obj):
    x, y = _grid()
    _, weight = reassemble_patches(extract_patches(obj, x, y, PATCH), x, y, SHAPE, crop_size=8)
    np.testing.assert_array_equal(weight > 0, scanned_region_mask(x, y, SHAPE, 8))
    assert weight.max() == pytest.approx(4.0)  # stride 4, crop 8: every inner pixel covered 2 x 2 times


def test_subpixel_positions_within_stated_error(rng):
    # Cutting and placing are both bilinear, so a sub-pixel scan sees the object through a blur of at
    # most one pixel: on an object smooth over 3 px the RMS error stays below 2 % of max |O| where the
    # region is fully covered (measured: 1.3 %).
    smooth = gaussian_filter(rng.standard_normal(SHAPE), 3) + 1j * gaussian_filter(rng.standard_normal(SHAPE), 3)
    smooth /= np.abs(smooth).max()
    x, y = _grid(jitter=True, rng=rng)
    out, weight = reassemble_patches(extract_patches(smooth, x, y, PATCH), x, y, SHAPE, crop_size=8)
    full = weight > 0.5
    rms = np.sqrt(np.mean(np.abs(out[full] - smooth[full]) ** 2))
    assert rms < 0.02


def test_absolute_positions_no_recentring():
    patch = np.zeros((1, PATCH, PATCH), dtype=np.complex64)
    patch[0, PATCH // 2, PATCH // 2] = 1
    out, _ = reassemble_patches(patch, np.array([40.0]), np.array([7.0]), SHAPE, crop_size=4)
    assert np.unravel_index(np.argmax(np.abs(out)), SHAPE) == (7, 40)
    half, _ = reassemble_patches(patch, np.array([40.5]), np.array([7.0]), SHAPE, crop_size=4)
    # Half a pixel to the right: the point is split evenly between columns 40 and 41.
    assert np.abs(half[7, 40]) == pytest.approx(0.5)
    assert np.abs(half[7, 41]) == pytest.approx(0.5)


def test_groups_equal_flattened_and_batching_changes_nothing(obj, rng, monkeypatch):
    x, y = _grid(jitter=True, rng=rng)
    x, y = x[:60], y[:60]
    patches = extract_patches(obj, x, y, PATCH)
    flat, flat_weight = reassemble_patches(patches, x, y, SHAPE, crop_size=8)
    grouped, _ = reassemble_patches(
        patches.reshape(15, 4, PATCH, PATCH), x.reshape(15, 4), y.reshape(15, 4), SHAPE, crop_size=8
    )
    np.testing.assert_array_equal(flat, grouped)
    monkeypatch.setattr(reassemble, "_ENTRIES_PER_BATCH", 3 * PATCH**2)
    batched, batched_weight = reassemble_patches(patches, x, y, SHAPE, crop_size=8)
    np.testing.assert_allclose(batched, flat, atol=1e-6)
    np.testing.assert_allclose(batched_weight, flat_weight, atol=1e-6)


def test_scatter_is_the_adjoint_of_extract(rng):
    x = rng.uniform(-5, 65, 30)  # some windows hang off the canvas
    y = rng.uniform(-5, 55, 30)
    canvas = rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE)
    values = rng.standard_normal((30, PATCH, PATCH)) + 1j * rng.standard_normal((30, PATCH, PATCH))
    lhs = np.vdot(extract_patches(canvas, x, y, PATCH), values)
    rhs = np.vdot(canvas, scatter_add_patches(values, x, y, SHAPE))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_positions_off_the_canvas_are_dropped(obj):
    patches = extract_patches(obj, np.array([20.0]), np.array([20.0]), PATCH)
    out, weight = reassemble_patches(patches, np.array([500.0]), np.array([-300.0]), SHAPE, crop_size=8)
    assert not weight.any() and not out.any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop_size": 0}, "crop_size"),
        ({"crop_size": PATCH + 1}, "crop_size"),
        ({"weighting": "gauss"}, "weighting"),
        ({"weighting": "probe"}, "probe"),
        ({"weighting": "probe", "probe": np.ones((8, 8))}, "probe"),
        ({"weighting": "probe", "probe": np.zeros((PATCH, PATCH))}, "zero"),
    ],
)
def test_bad_options_raise(obj, kwargs, message):
    x, y = _grid()
    with pytest.raises(ValueError, match=message):
        reassemble_patches(extract_patches(obj, x, y, PATCH), x, y, SHAPE, **kwargs)


def test_bad_positions_and_shapes_raise(obj):
    x, y = _grid()
    patches = extract_patches(obj, x, y, PATCH)
    with pytest.raises(ValueError, match="x_px has shape"):
        reassemble_patches(patches, x[:-1], y, SHAPE, crop_size=8)
    with pytest.raises(ValueError, match="NaN"):
        reassemble_patches(patches, np.where(np.arange(x.size) == 3, np.nan, x), y, SHAPE, crop_size=8)
    with pytest.raises(ValueError, match="square"):
        reassemble_patches(patches[:, :, :-1], x, y, SHAPE, crop_size=8)
    with pytest.raises(ValueError, match="canvas_shape"):
        reassemble_patches(patches, x, y, (50,), crop_size=8)


def _backend_reassemble(name):
    if name == "torch":
        pytest.importorskip("torch")
        from ptycholib.torch.reassemble import reassemble_patches as backend_reassemble
    else:
        pytest.importorskip("tensorflow")
        from ptycholib.tensorflow.reassemble import reassemble_patches as backend_reassemble
    return backend_reassemble


@pytest.mark.parity
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
@pytest.mark.parametrize("weighting", ["crop", "probe"])
def test_backend_equals_numpy_reference(rng, backend, weighting):
    backend_reassemble = _backend_reassemble(backend)
    x = rng.uniform(-4, 64, 80)
    y = rng.uniform(-4, 54, 80)
    shape = (80, PATCH, PATCH)
    patches = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    probe = (rng.standard_normal((PATCH, PATCH)) + 1j * rng.standard_normal((PATCH, PATCH))).astype(np.complex64)
    expected, expected_weight = reassemble_patches(patches, x, y, SHAPE, crop_size=6, weighting=weighting, probe=probe)
    out, weight = backend_reassemble(patches, x, y, SHAPE, crop_size=6, weighting=weighting, probe=probe)
    out, weight = np.asarray(out), np.asarray(weight)
    assert out.dtype == np.complex64 and weight.dtype == np.float32
    assert np.max(np.abs(out - expected)) <= 1e-5 * np.max(np.abs(expected))
    assert np.max(np.abs(weight - expected_weight)) <= 1e-5 * np.max(expected_weight)
    np.testing.assert_array_equal(weight > 0, expected_weight > 0)


@pytest.mark.parity
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_backend_real_input_and_errors(rng, backend):
    backend_reassemble = _backend_reassemble(backend)
    x, y = _grid()
    patches = rng.standard_normal((x.size, PATCH, PATCH))
    expected, _ = reassemble_patches(patches, x, y, SHAPE, crop_size=8)
    out, _ = backend_reassemble(patches, x, y, SHAPE, crop_size=8)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="x_px has shape"):
        backend_reassemble(patches, x[:-1], y, SHAPE, crop_size=8)


def test_quick_benchmark_rows(monkeypatch):
    from ptycholib.bench import reassemble as _bench_reassemble

    monkeypatch.setattr(_bench_reassemble, "_torch_inference_seconds", lambda n_positions, patch_size: 1.0)
    rows = {row.name: row for row in _bench_reassemble.reassemble_benchmark(quick=True)}
    ratio = rows["numpy reassembly (crop) / inference time"]
    assert ratio.target == "<= 0.1" and 0 < ratio.value < 0.1
    assert rows["numpy reassembly rate (crop 20)"].unit == "patterns/s"
    assert rows["numpy ePIE time per iteration"].value > 0
