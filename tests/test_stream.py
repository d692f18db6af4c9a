"""Streaming large scans (issue 15, item 3): chunked readers, chunked reconstruction, streamed training batches.

Every streamed path is compared with the in-memory path on the tiny data set: readers give the same
amplitudes, chunked reconstruction the same object (to 1e-6), streamed training the same batches.
"""

import dataclasses
import zipfile

import numpy as np
import pytest

from ptycholib import archive, batching, chunked, data, stream, workflow
from ptycholib.archive import ModelArchive
from ptycholib.backends import BACKENDS, get_backend, is_available
from ptycholib.config import Config, apply_overrides

AVAILABLE = [b for b in BACKENDS if is_available(b)]


def untrained_archive(dataset, backend, **overrides):
    """An untrained model for ``dataset`` (reconstruction only needs some weights)."""
    config = apply_overrides(Config(), {"backend": backend, "n_filters_scale": 1, "batch_size": 8, "n_groups": 8,
                                          **overrides})
    _, model, _, input_scale = workflow.prepare_training(dataset, config)
    weights = get_backend(backend).network.get_weights(model)
    return ModelArchive(config=config, weights=weights, input_scale=input_scale, backend=backend)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_train_test):
    """The tiny test scan as a stored NPZ, a compressed NPZ and an HDF5 file."""
    pytest.importorskip("h5py")
    _, test = tiny_train_test
    folder = tmp_path_factory.mktemp("stream")
    stored = data.save_npz(test, folder / "test.npz")
    compressed = folder / "compressed.npz"
    with np.load(stored) as npz:
        np.savez_compressed(compressed, **{key: npz[key] for key in npz.files})
    h5 = stream.save_h5(test, folder / "test.h5", chunk_rows=4)
    return {"stored": stored, "compressed": compressed, "h5": h5}


@pytest.mark.parametrize("kind, access", [("stored", "memory-mapped"), ("compressed", "compressed"), ("h5", "hdf5")])
def test_readers_give_the_in_memory_amplitudes(files, tiny_train_test, kind, access):
    _, test = tiny_train_test
    with stream.open_patterns(files[kind]) as source:
        assert source.access == access and source.n_positions == test.n_positions
        np.testing.assert_array_equal(source.read(3, 9), test.amplitudes[3:9])
        order = np.array([7, 2, 2, 11, 0])  # any order, repeats, backwards jumps
        np.testing.assert_array_equal(source.take(order), test.amplitudes[order])
        np.testing.assert_array_equal(source.x_px, test.x_px)
        loaded = source.load()
    np.testing.assert_array_equal(loaded.amplitudes, test.amplitudes)
    np.testing.assert_array_equal(loaded.obj, test.obj)
    assert loaded.metadata["measurement"] == "amplitude"


def test_stored_npz_member_is_memory_mapped_not_read(files):
    with stream.open_patterns(files["stored"]) as source:
        assert isinstance(source._rows, np.memmap)
    with zipfile.ZipFile(files["stored"]) as npz:
        assert npz.getinfo("diff3d.npy").compress_type == zipfile.ZIP_STORED


def test_bad_values_are_found_in_the_chunk_that_holds_them(tmp_path, tiny_train_test):
    _, test = tiny_train_test
    amplitudes = test.amplitudes.copy()
    amplitudes[9, 3, 4] = -1.0
    path = tmp_path / "bad.npz"
    np.savez(path, diff3d=amplitudes, xcoords=test.x_px, ycoords=test.y_px, probeGuess=test.probe,
             metadata=np.array('{"measurement": "amplitude"}'))
    with stream.open_patterns(path) as source:
        source.read(0, 8)
        with pytest.raises(ValueError, match="negative"):
            source.read(8, 16)


def test_positions_are_checked_when_opening(tmp_path, tiny_train_test):
    _, test = tiny_train_test
    path = tmp_path / "short.npz"
    np.savez(path, diff3d=test.amplitudes, xcoords=test.x_px[:-1], ycoords=test.y_px[:-1], probeGuess=test.probe,
             metadata=np.array('{"measurement": "amplitude"}'))
    with pytest.raises(ValueError, match="short.npz"):
        stream.open_patterns(path)


def test_counts_in_hdf5_are_converted(tmp_path, tiny_train_test):
    h5py = pytest.importorskip("h5py")
    _, test = tiny_train_test
    path = tmp_path / "counts.h5"
    counts = np.round(test.amplitudes.astype(np.float64) ** 2).astype(np.uint32)
    with h5py.File(path, "w") as handle:
        for key, value in (("diff3d", counts), ("xcoords", test.x_px), ("ycoords", test.y_px), ("probeGuess", test.probe)):
            handle.create_dataset(key, data=value)
    with stream.open_patterns(path) as source:
        np.testing.assert_allclose(source.read(0, 5), np.sqrt(counts[:5].astype(np.float32)))
        assert source.metadata["converted_from"] == "intensity"


def test_should_stream_by_size(files):
    with stream.open_patterns(files["stored"]) as source:
        assert not stream.should_stream(source)
        assert stream.should_stream(source, threshold_bytes=source.nbytes - 1)


def test_scan_statistics_equal_the_in_memory_ones(files, tiny_train_test):
    from ptycholib import forward, grouping

    _, test = tiny_train_test
    with stream.open_patterns(files["h5"]) as source:
        g, s0 = stream.scan_statistics(source, 4.0, chunk_size=5)
    assert g == grouping.input_scale(test.amplitudes)
    assert s0 == forward.initial_intensity_scale(test.amplitudes, test.probe, 4.0)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("gridsize", [1, 2])
def test_chunked_reconstruction_equals_in_memory(files, tiny_train_test, backend, gridsize):
    _, test = tiny_train_test
    model = untrained_archive(test, backend, gridsize=gridsize)
    whole = workflow.reconstruct(model, test)
    with stream.open_patterns(files["h5"]) as source:
        streamed = workflow.reconstruct(model, source)  # a source is reconstructed chunk by chunk
        small_chunks = chunked.reconstruct_chunked(model, source, chunk_size=5)  # one batch of 8 per chunk
    for result in (streamed, small_chunks):
        np.testing.assert_allclose(result.obj, whole.obj, rtol=0, atol=1e-6 * np.abs(whole.obj).max())
        np.testing.assert_allclose(result.weights, whole.weights, rtol=1e-6)
        np.testing.assert_array_equal(result.region, whole.region)
        np.testing.assert_array_equal(result.indices, whole.indices)
        assert result.object_patches.shape[0] == 0


@pytest.mark.parametrize("backend", AVAILABLE[:1])
def test_split_inference_merges_to_the_single_process_result(files, tiny_train_test, tmp_path, backend):
    _, test = tiny_train_test
    model = untrained_archive(test, backend, gridsize=2)
    with stream.open_patterns(files["stored"]) as source:
        single = chunked.reconstruct_chunked(model, source, chunk_size=8)
        ranges = [(0, 5), (5, 12), (12, source.n_positions)]
        paths = [chunked.save_partial(chunked.reconstruct_partial(model, source, positions=r, chunk_size=8),
                                      tmp_path / f"part{i}.npz", source="test.npz") for i, r in enumerate(ranges)]
        in_memory_part = chunked.reconstruct_partial(model, test, positions=(5, 12), chunk_size=8)  # a PtychoData
        np.testing.assert_array_equal(in_memory_part.numerator, chunked.load_partial(paths[1]).numerator)
    merged = chunked.merge_partials(paths[::-1])  # any order
    np.testing.assert_array_equal(merged.obj, single.obj)
    np.testing.assert_array_equal(merged.weights, single.weights)
    np.testing.assert_array_equal(merged.region, single.region)
    with pytest.raises(ValueError, match="gap"):
        chunked.merge_partials(paths[1:])
    with pytest.raises(ValueError, match="overlap"):
        chunked.merge_partials(paths + paths[:1])


def test_parse_positions():
    assert chunked.parse_positions("3:7", 10) == (3, 7)
    assert chunked.parse_positions(":", 10) == (0, 10)
    for bad in ("3", "a:b", "7:3", "1:2:3"):
        with pytest.raises(ValueError, match="positions"):
            chunked.parse_positions(bad, 10)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_streamed_training_sees_the_same_batches(files, tiny_train_test, backend):
    train, _ = tiny_train_test
    config = apply_overrides(Config(), {"backend": backend, "gridsize": 2, "n_filters_scale": 1, "n_groups": 24,
                                        "nepochs": 1, "batch_size": 8, "validation_fraction": 0.2, "logger": "none"})
    _, _, grouped, g = workflow.prepare_training(train, config)
    path = files["stored"].parent / "train.h5"
    stream.save_h5(train, path)
    with stream.open_patterns(path) as source:
        _, _, streamed, g_streamed = workflow.prepare_training(source, config)
        assert g_streamed == g and batching.is_streamed(streamed.inputs)
        indices = batching.epoch_order(24, 0, 1)[:8]
        batch = streamed.inputs.batch(indices)
        np.testing.assert_array_equal(batch["inputs"], grouped.inputs[indices])
        np.testing.assert_array_equal(batch["offsets"], grouped.offsets[indices])
        np.testing.assert_array_equal(batch["amplitudes"], grouped.amplitudes[indices])
        in_memory = workflow.train_model(train, config, progress=False)
        from_file = workflow.train_model(source, config, progress=False)
    assert from_file.archive.input_scale == in_memory.archive.input_scale
    np.testing.assert_allclose(from_file.history[0]["loss"], in_memory.history[0]["loss"], rtol=1e-5)
    for name, value in in_memory.archive.weights.items():
        np.testing.assert_allclose(from_file.archive.weights[name], value, rtol=1e-4, atol=1e-6)


def test_streamed_supervised_targets(files, tiny_train_test):
    train, _ = tiny_train_test
    config = apply_overrides(Config(), {"gridsize": 2, "n_groups": 8, "model_type": "supervised",
                                        "object_big": False})
    pytest.importorskip("torch")
    _, _, grouped, _ = workflow.prepare_training(train, config)
    path = files["stored"].parent / "train_sup.h5"
    stream.save_h5(train, path)
    with stream.open_patterns(path) as source:
        _, _, streamed, _ = workflow.prepare_training(source, config)
        batch = streamed.inputs.batch(np.arange(8))
    np.testing.assert_allclose(batch["amplitude"], np.abs(grouped.target_patches), rtol=1e-6)


def test_h5_writer_discards_an_incomplete_file(tmp_path, tiny_train_test):
    pytest.importorskip("h5py")
    _, test = tiny_train_test
    with pytest.warns(UserWarning, match="never written"):
        with stream.H5PatternWriter(tmp_path / "x.h5", test.x_px, test.y_px, test.probe) as writer:
            writer.write(0, test.amplitudes[:3])
    assert not (tmp_path / "x.h5").exists()
    with pytest.raises(RuntimeError):
        with stream.H5PatternWriter(tmp_path / "y.h5", test.x_px, test.y_px, test.probe) as writer:
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_ptychodus_pair_streams_like_load_ptychodus_h5(tmp_path):
    """A ptychodus diffraction.h5 + product.h5 pair read in chunks equals `load_ptychodus_h5`."""
    h5py = pytest.importorskip("h5py")
    from ptycholib.ptychodus import files as ptychodus_files

    rng = np.random.default_rng(0)
    counts = rng.poisson(20, size=(10, 64, 64)).astype(np.uint16)
    bad = np.zeros((64, 64), bool)
    bad[3, 5] = True
    with h5py.File(tmp_path / "diffraction.h5", "w") as handle:
        handle["indexes"] = np.arange(10)
        handle["patterns"] = counts
        handle["bad_pixels"] = bad
    with h5py.File(tmp_path / "product.h5", "w") as handle:
        obj = handle.create_dataset("object", data=np.ones((1, 150, 160), np.complex64))
        for key, value in (("center_x_m", 0.0), ("center_y_m", 0.0), ("pixel_width_m", 1e-8), ("pixel_height_m", 1e-8)):
            obj.attrs[key] = value
        handle["probe"] = np.ones((1, 1, 64, 64), np.complex64)
        handle["probe_position_indexes"] = np.arange(1, 10)  # pattern 0 has no position: skipped
        handle["probe_position_x_m"] = rng.uniform(-3e-7, 3e-7, 9)
        handle["probe_position_y_m"] = rng.uniform(-3e-7, 3e-7, 9)
    with pytest.warns(UserWarning, match="no position"):
        whole = ptychodus_files.load_ptychodus_h5(tmp_path / "diffraction.h5", tmp_path / "product.h5")
    with pytest.warns(UserWarning, match="no position"):
        source = stream.open_patterns(tmp_path)
    with source:
        assert source.n_positions == 9
        np.testing.assert_array_equal(source.read(0, 9), whole.amplitudes)
        np.testing.assert_array_equal(source.take([8, 1]), whole.amplitudes[[8, 1]])
        np.testing.assert_array_equal(source.x_px, whole.x_px)


def test_cli_reconstruct_streams_and_merges(files, tiny_train_test, tmp_path):
    pytest.importorskip("torch")
    from ptycholib.cli import main

    _, test = tiny_train_test
    model_path = archive.save_model(tmp_path / "wts.h5.zip", untrained_archive(test, "torch", gridsize=2))
    common = ["reconstruct", "--model", str(model_path), "--data", str(files["stored"])]
    assert main(common + ["--out", str(tmp_path / "memory.npz"), "--stream", "off"]) == 0
    assert main(common + ["--out", str(tmp_path / "streamed.npz"), "--stream", "on", "--chunk-size", "8"]) == 0
    assert main(common + ["--positions", "0:9", "--out", str(tmp_path / "a.npz")]) == 0
    assert main(common + ["--positions", "9:", "--out", str(tmp_path / "b.npz")]) == 0
    assert main(["reconstruct", "--merge", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                 "--out", str(tmp_path / "merged.npz")]) == 0
    memory, _ = workflow.load_reconstruction(tmp_path / "memory.npz")
    for name in ("streamed", "merged"):
        obj, _ = workflow.load_reconstruction(tmp_path / f"{name}.npz")
        np.testing.assert_allclose(obj, memory, rtol=0, atol=1e-6 * np.abs(memory).max())
    assert main(["reconstruct", "--merge", str(tmp_path / "a.npz"), "--out", str(tmp_path / "x.npz")]) == 2


def test_cli_reconstruct_refuses_refine_when_streaming(files, tiny_train_test, tmp_path):
    pytest.importorskip("torch")
    from ptycholib.cli import main

    _, test = tiny_train_test
    model_path = archive.save_model(tmp_path / "wts.h5.zip", untrained_archive(test, "torch"))
    code = main(["reconstruct", "--model", str(model_path), "--data", str(files["stored"]), "--stream", "on",
                 "--refine", "2", "--out", str(tmp_path / "r.npz")])
    assert code == 2



def test_chunked_reconstruction_with_probe_weights(files, tiny_train_test):
    pytest.importorskip("torch")
    _, test = tiny_train_test
    model = untrained_archive(test, "torch")
    inference = dataclasses.replace(model.config.inference, weighting="probe")
    whole = workflow.reconstruct(model, test, inference=inference)
    with stream.open_patterns(files["stored"]) as source:
        streamed = chunked.reconstruct_chunked(model, source, inference=inference, chunk_size=8)
    np.testing.assert_allclose(streamed.obj, whole.obj, rtol=0, atol=1e-6 * np.abs(whole.obj).max())
    np.testing.assert_allclose(streamed.weights, whole.weights, rtol=1e-6)


def test_scale_benchmark_writes_its_scan_in_chunks(tmp_path):
    pytest.importorskip("h5py")
    from ptycholib.bench import scale

    path = scale.simulate_scan_file(tmp_path / "scan.h5", 50, chunk=16)
    with stream.open_patterns(path) as source:
        assert source.n_positions == 50 and source.obj is None
        amplitudes = source.read(0, 50)
    assert np.all(amplitudes.sum(axis=(-2, -1)) > 0)
    x_px, y_px, _ = scale._raster(50, 64, 8)
    np.testing.assert_array_equal(source.x_px, x_px)


@pytest.mark.slow
def test_scale_benchmark_rows(monkeypatch):
    pytest.importorskip("torch")
    from ptycholib import bench

    monkeypatch.setenv("PTYCHOLIB_BENCH_SCALE_SIZES", "32,48")
    rows = bench.run(["scale"], threads=1)
    names = [row.name for row in rows]
    assert "peak RSS, 48 patterns" in names and "per-pattern time, slowest / fastest size" in names
    assert all(np.isfinite(row.value) and row.value > 0 for row in rows)


def test_cli_train_streams_from_hdf5(files, tmp_path):
    pytest.importorskip("torch")
    from ptycholib.cli import main

    code = main(["train", "--data", str(files["h5"]), "--backend", "torch", "--stream", "on", "--out", str(tmp_path),
                 "--no-progress", "gridsize=1", "n_filters_scale=1", "n_groups=8", "nepochs=1", "batch_size=4",
                 "validation_fraction=0.25", "logger=none"])
    assert code == 0 and (tmp_path / archive.DEFAULT_NAME).is_file()


def test_object_and_fortran_pattern_arrays_are_refused(tmp_path, tiny_train_test):
    _, test = tiny_train_test
    small = {"xcoords": test.x_px, "ycoords": test.y_px, "probeGuess": test.probe}
    np.savez(tmp_path / "fortran.npz", diff3d=np.asfortranarray(test.amplitudes), **small)
    with pytest.raises(ValueError, match="Fortran order"):
        stream.open_patterns(tmp_path / "fortran.npz", measurement="amplitude")
    objects = np.empty(len(test.x_px), dtype=object)
    np.savez(tmp_path / "objects.npz", diff3d=objects, allow_pickle=True, **small)
    with pytest.raises(ValueError, match="never unpickles"):
        stream.open_patterns(tmp_path / "objects.npz", measurement="amplitude")
