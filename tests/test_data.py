"""ptycholib.data: PtychoData validation, the NPZ contract, counts <-> amplitudes."""

import dataclasses
import json

import numpy as np
import pytest

from ptycholib import data
from ptycholib.data import PtychoData

N = 64


def _fields(dataset):
    return {f.name: getattr(dataset, f.name) for f in dataclasses.fields(dataset)}


def _assert_same(a, b):
    for name in ("amplitudes", "x_px", "y_px", "probe", "obj", "scan_index", "bad_pixels", "object_index"):
        left, right = getattr(a, name), getattr(b, name)
        if left is None or right is None:
            assert left is None and right is None, name
        else:
            assert left.dtype == right.dtype, name
            np.testing.assert_array_equal(left, right, err_msg=name)


# ------------------------------------------------------------------------------------------------
# construction and validation


def test_construction_converts_dtypes_and_fills_defaults():
    dataset = PtychoData(np.ones((2, N, N), np.float64), [32, 40], [32, 32], np.ones((N, N)))
    assert dataset.amplitudes.dtype == np.float32
    assert dataset.x_px.dtype == np.float64 and dataset.probe.dtype == np.complex64
    assert dataset.scan_index.dtype == np.int64 and not dataset.scan_index.any()
    assert dataset.positions.shape == (2, 2) and dataset.positions[1].tolist() == [40.0, 32.0]
    assert dataset.n_positions == 2 and dataset.patch_size == N


def test_metadata_is_converted_to_plain_json():
    dataset = PtychoData(np.ones((1, N, N)), [32], [32], np.ones((N, N)), metadata={"n": np.int64(3), "a": np.arange(2)})
    assert dataset.metadata == {"n": 3, "a": [0, 1]}
    assert json.dumps(dataset.metadata)


def test_subset_keeps_probe_and_object(tiny_dataset):
    part = tiny_dataset.subset([3, 1])
    assert part.n_positions == 2 and part.x_px.tolist() == tiny_dataset.x_px[[3, 1]].tolist()
    assert part.obj is tiny_dataset.obj


def _bad(mutate):
    """Return valid constructor fields for a 2-pattern set on a 100 x 120 canvas, changed by ``mutate``."""

    def build():
        fields = {
            "amplitudes": np.ones((2, N, N), np.float32),
            "x_px": np.array([40.0, 50.0]),
            "y_px": np.array([40.0, 45.0]),
            "probe": np.ones((N, N), np.complex64),
            "obj": np.ones((100, 120), np.complex64),
            "scan_index": np.zeros(2, np.int64),
            "bad_pixels": np.zeros((N, N), bool),
            "metadata": {},
        }
        mutate(fields)
        return fields

    return build


def _set(key, value):
    return lambda fields: fields.__setitem__(key, value)


def _poke(key, index, value):
    def mutate(fields):
        array = fields[key].copy()
        array[index] = value
        fields[key] = array

    return mutate


INVALID = {
    "amplitudes 2-D": (_set("amplitudes", np.ones((N, N))), ["amplitudes (diff3d)", "shape"]),
    "patterns not square": (_set("amplitudes", np.ones((2, N, 32))), ["amplitudes (diff3d)", "N is 64"]),
    "N not supported": (_set("amplitudes", np.ones((2, 32, 32))), ["32 x 32", "64, 128, 256"]),
    "no patterns": (_set("amplitudes", np.ones((0, N, N))), ["no patterns"]),
    "amplitudes NaN": (_poke("amplitudes", (1, 3, 4), np.nan), ["amplitudes (diff3d)", "non-finite", "(1, 3, 4)"]),
    "amplitudes Inf": (_poke("amplitudes", (0, 0, 0), np.inf), ["amplitudes (diff3d)", "non-finite"]),
    "amplitudes negative": (_poke("amplitudes", (0, 5, 5), -2.0), ["amplitudes (diff3d)", "1 negative", 'measurement="intensity"']),
    "amplitudes complex": (_set("amplitudes", np.ones((2, N, N), np.complex64)), ["amplitudes (diff3d)", "complex"]),
    "x length": (_set("x_px", np.array([1.0, 2.0, 3.0])), ["x_px (xcoords) has 3 entries", "2 patterns"]),
    "y 2-D": (_set("y_px", np.ones((2, 1))), ["y_px (ycoords)", "shape"]),
    "x NaN": (_poke("x_px", 1, np.nan), ["x_px (xcoords)", "non-finite"]),
    "probe size": (_set("probe", np.ones((32, 32))), ["probe (probeGuess)", "N is 64"]),
    "probe modes": (_set("probe", np.ones((2, N, N))), ["probe (probeGuess)", "modes axis"]),
    "probe zero": (_set("probe", np.zeros((N, N))), ["probe (probeGuess)", "zero everywhere"]),
    "probe NaN": (_poke("probe", (0, 0), np.nan), ["probe (probeGuess)", "non-finite"]),
    "object 1-D": (_set("obj", np.ones(10)), ["obj (objectGuess)", "shape"]),
    "object NaN": (_poke("obj", (2, 2), np.nan), ["obj (objectGuess)", "non-finite"]),
    "position outside": (_poke("x_px", 1, 130.0), ["outside the object canvas", "0 <= x <= 119", "x=130"]),
    "position negative": (_poke("y_px", 0, -1.0), ["outside the object canvas", "swapped"]),
    "scan_index length": (_set("scan_index", np.zeros(3, np.int64)), ["scan_index has 3 entries"]),
    "scan_index float": (_set("scan_index", np.zeros(2)), ["scan_index", "integers"]),
    "object_index length": (_set("object_index", np.zeros(3, np.int64)), ["object_index has 3 entries"]),
    "object_index float": (_set("object_index", np.zeros(2)), ["object_index", "integers"]),
    "object_index bool": (_set("object_index", np.zeros(2, bool)), ["object_index", "integers"]),
    "object_index 2-D": (_set("object_index", np.zeros((2, 1), np.int64)), ["object_index", "shape"]),
    "object_index negative": (_set("object_index", np.array([0, -1])), ["object_index", "1 negative"]),
    "bad_pixels shape": (_set("bad_pixels", np.zeros((32, 32), bool)), ["bad_pixels", "N is 64"]),
    "bad_pixels values": (_set("bad_pixels", np.full((N, N), 2)), ["bad_pixels", "boolean mask"]),
    "metadata not JSON": (_set("metadata", {"f": object()}), ["metadata", "JSON"]),
    "metadata not dict": (_set("metadata", [1]), ["metadata must be a dict"]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_every_validation_failure_names_the_key(case):
    mutate, phrases = INVALID[case]
    with pytest.raises(ValueError) as error:
        PtychoData(**_bad(mutate)())
    for phrase in phrases:
        assert phrase in str(error.value), str(error.value)


def test_valid_reference_fields_construct():
    PtychoData(**_bad(lambda fields: None)())


# ------------------------------------------------------------------------------------------------
# counts <-> amplitudes


def test_counts_amplitudes_round_trip(rng):
    counts = rng.integers(0, 1_000_000, size=(3, N, N))
    amplitudes = data.counts_to_amplitudes(counts)
    assert amplitudes.dtype == np.float32
    np.testing.assert_allclose(amplitudes, np.sqrt(counts), rtol=1e-6)
    np.testing.assert_array_equal(np.rint(data.amplitudes_to_counts(amplitudes)).astype(np.int64), counts)


def test_counts_must_be_nonnegative_and_finite():
    with pytest.raises(ValueError, match="diff3d .run.npz. has 1 negative value .minimum -1.; counts must be >= 0"):
        data.counts_to_amplitudes(np.array([[1.0, -1.0]]), name="diff3d", where="run.npz")
    with pytest.raises(ValueError, match="non-finite"):
        data.counts_to_amplitudes(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="amplitudes must be >= 0"):
        data.amplitudes_to_counts(np.array([-1.0]))


# ------------------------------------------------------------------------------------------------
# NPZ contract


def test_npz_round_trip_is_exact(tiny_dataset, tmp_path):
    path = data.save_npz(tiny_dataset, tmp_path / "run.npz")
    loaded = data.load_npz(path)
    _assert_same(tiny_dataset, loaded)
    assert loaded.metadata == dict(tiny_dataset.metadata, measurement="amplitude")
    with np.load(path, allow_pickle=False) as npz:  # plain arrays only, PtychoPINN's keys
        assert {"diff3d", "xcoords", "ycoords", "xcoords_start", "probeGuess", "objectGuess", "metadata"} <= set(npz.files)
        assert npz["diff3d"].dtype == np.float32 and npz["probeGuess"].dtype == np.complex64
        assert json.loads(str(npz["metadata"][()]))["measurement"] == "amplitude"


def test_object_index_travels_through_npz_and_subset(tiny_dataset, tmp_path):
    assert tiny_dataset.object_index is None
    with np.load(data.save_npz(tiny_dataset, tmp_path / "one.npz")) as npz:
        assert "object_index" not in npz.files  # absent key: one object
    tiles = np.arange(tiny_dataset.n_positions, dtype=np.int32) % 3
    several = dataclasses.replace(tiny_dataset, object_index=tiles)
    assert several.object_index.dtype == np.int64
    loaded = data.load_npz(data.save_npz(several, tmp_path / "three.npz"))
    _assert_same(several, loaded)
    assert loaded.object_index.dtype == np.int64 and loaded.object_index.tolist() == tiles.tolist()
    assert several.subset([4, 2]).object_index.tolist() == [1, 2]
    assert tiny_dataset.subset([4, 2]).object_index is None


@pytest.mark.parametrize("bad, phrase", [(np.array([0.0, 1.0]), "integers"), (np.array([0, -2]), "negative"),
                                         (np.zeros(3, np.int64), "3 entries")])
def test_bad_object_index_is_rejected_on_load(tmp_path, bad, phrase):
    dataset = PtychoData(np.ones((2, N, N)), [32, 40], [32, 32], np.ones((N, N)), metadata={"measurement": "amplitude"})
    path = data.save_npz(dataset, tmp_path / "run.npz")
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    np.savez(path, object_index=bad, **arrays)
    with pytest.raises(ValueError, match="object_index") as error:
        data.load_npz(path)
    assert "run.npz" in str(error.value) and phrase in str(error.value)


def test_npz_round_trip_without_optional_arrays(tmp_path):
    dataset = PtychoData(np.ones((2, N, N)), [32, 40], [32, 32], np.ones((N, N)))
    loaded = data.load_npz(data.save_npz(dataset, tmp_path / "plain.npz"))
    _assert_same(dataset, loaded)
    assert loaded.obj is None and loaded.bad_pixels is None


def _write(path, **arrays):
    with open(path, "wb") as handle:  # exact name, like other tools write it
        np.savez(handle, **arrays)
    return path


def _minimal(diff3d, **extra):
    m = len(diff3d)
    return dict(diff3d=diff3d, xcoords=np.full(m, 32.0), ycoords=np.full(m, 32.0), probeGuess=np.ones((N, N), np.complex64), **extra)


def test_float_patterns_need_a_measurement_domain(tmp_path):
    path = _write(tmp_path / "f.npz", **_minimal(np.full((2, N, N), 4.5, np.float32)))
    with pytest.raises(ValueError, match='f.npz.*does not say.*measurement="amplitude" or measurement="intensity"'):
        data.load_npz(path)
    assert data.load_npz(path, measurement="amplitude").amplitudes[0, 0, 0] == np.float32(4.5)
    converted = data.load_npz(path, measurement="intensity")
    assert converted.amplitudes[0, 0, 0] == np.float32(np.sqrt(4.5))
    assert converted.metadata["converted_from"] == "intensity"
    with pytest.raises(ValueError, match="'counts'"):
        data.load_npz(path, measurement="counts")


def test_integer_patterns_are_counts(tmp_path):
    path = _write(tmp_path / "i.npz", **_minimal(np.full((2, N, N), 9, np.uint16)))
    assert data.load_npz(path).amplitudes[0, 0, 0] == 3.0
    with pytest.raises(ValueError, match="counts by definition"):
        data.load_npz(path, measurement="amplitude")


def test_metadata_measurement_and_diffraction_key(tmp_path):
    metadata = np.array(json.dumps({"measurement": "intensity", "nphotons": 1e6}))
    path = _write(tmp_path / "m.npz", **_minimal(np.full((2, N, N), 6.25), metadata=metadata))
    arrays = _minimal(np.full((2, N, N), 6.25), metadata=metadata)
    arrays["diffraction"] = arrays.pop("diff3d")
    alias = _write(tmp_path / "alias.npz", **arrays)
    for loaded in (data.load_npz(path), data.load_npz(alias)):
        assert loaded.amplitudes[0, 0, 0] == 2.5 and loaded.metadata["nphotons"] == 1e6
    with pytest.warns(UserWarning, match="using the caller's choice"):
        assert data.load_npz(path, measurement="amplitude").amplitudes[0, 0, 0] == 6.25


def test_counts_read_as_amplitudes_warn(tmp_path):
    path = _write(tmp_path / "c.npz", **_minimal(np.full((2, N, N), 25.0)))
    with pytest.warns(UserWarning, match="looks like counts"):
        data.load_npz(path, measurement="amplitude")


def test_load_errors_name_file_and_key(tmp_path):
    negative = _minimal(np.ones((2, N, N), np.float32), metadata=np.array('{"measurement": "amplitude"}'))
    negative["diff3d"][1, 2, 3] = -1
    with pytest.raises(ValueError, match=r"neg.npz: amplitudes \(diff3d\) has 1 negative value"):
        data.load_npz(_write(tmp_path / "neg.npz", **negative))
    missing = _minimal(np.ones((2, N, N), np.uint8))
    del missing["xcoords"]
    with pytest.raises(ValueError, match="miss.npz has no 'xcoords' array"):
        data.load_npz(_write(tmp_path / "miss.npz", **missing))
    both = _minimal(np.ones((2, N, N), np.uint8), diffraction=np.ones((2, N, N), np.uint8))
    with pytest.raises(ValueError, match="both 'diff3d' and 'diffraction'"):
        data.load_npz(_write(tmp_path / "both.npz", **both))
    short = _minimal(np.ones((2, N, N), np.uint8))
    short["ycoords"] = np.ones(3)
    with pytest.raises(ValueError, match=r"short.npz: y_px \(ycoords\) has 3 entries"):
        data.load_npz(_write(tmp_path / "short.npz", **short))


def test_pickles_are_never_loaded(tmp_path):
    pickled = _minimal(np.ones((2, N, N), np.uint8), metadata=np.array({"measurement": "amplitude"}, dtype=object))
    with pytest.raises(ValueError, match="pickled object array.*never unpickles"):
        data.load_npz(_write(tmp_path / "p.npz", **pickled))
    legacy = _minimal(np.ones((2, N, N), np.uint8), _metadata=np.array({"nphotons": 1}, dtype=object))
    with pytest.warns(UserWarning, match="skipping _metadata"):
        data.load_npz(_write(tmp_path / "legacy.npz", **legacy))


def test_probe_modes_keep_mode_zero(tmp_path):
    modes = np.stack([np.full((N, N), 2.0 + 0j), np.full((N, N), 1.0 + 0j)])
    loaded = data.load_npz(_write(tmp_path / "modes.npz", **dict(_minimal(np.ones((2, N, N), np.uint8)), probeGuess=modes)))
    assert loaded.probe[0, 0] == 2.0 and loaded.metadata["probe_modes"] == 2
    assert loaded.metadata["probe_mode0_power_fraction"] == pytest.approx(0.8)


def test_atomic_save_leaves_no_partial_file(tiny_dataset, tmp_path, monkeypatch):
    target = tmp_path / "run.npz"
    target.write_bytes(b"previous content")

    def failing_savez(handle, **arrays):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        data.save_npz(tiny_dataset, target)
    assert target.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]
    monkeypatch.undo()
    fresh = tmp_path / "fresh.npz"
    with pytest.raises(OSError):
        monkeypatch.setattr(np, "savez", failing_savez)
        data.save_npz(tiny_dataset, fresh)
    assert not fresh.exists() and [p.name for p in tmp_path.iterdir()] == ["run.npz"]


def test_save_into_missing_folder_fails_cleanly(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError):
        data.save_npz(tiny_dataset, tmp_path / "nope" / "run.npz")
    with pytest.raises(TypeError, match="PtychoData"):
        data.save_npz({"diff3d": 1}, tmp_path / "x.npz")
