"""ptycholib inside the real ptychodus 1.7.0 (SPEC section 9, issue 8).

Scans are simulated with ptychodus's own simulator (``ptychodus.api.simulate``) and written with its
own writers; training runs through our ``TrainableReconstructor``; reconstruction runs through
ptychodus's batch mode (``ModelCore.batch_mode_execute``) with ptycholib injected, and through the
pure ``ptychodus.api`` path.
"""

import shutil
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("ptychodus")
pytestmark = pytest.mark.filterwarnings("ignore:'xdrlib' is deprecated:DeprecationWarning")  # a ptychodus plugin

from ptychodus.api.assemble import AssembledDiffractionData
from ptychodus.api.geometry import ImageExtent, PixelGeometry
from ptychodus.api.io import load_product, save_diffraction_data, save_product
from ptychodus.api.object import compute_object_geometry
from ptychodus.api.probe import ProbeGeometry, ProbeSequence
from ptychodus.api.probe_positions import ProbePositionSequence
from ptychodus.api.product import Product, ProductMetadata
from ptychodus.api.propagate import PropagatorParameters
from ptychodus.api.reconstruct import TrainOutput, prepare_reconstruct_input
from ptychodus.api.settings import SettingsRegistry
from ptychodus.api.simulate.diffraction import generate_diffraction_data
from ptychodus.api.simulate.object import (
    generate_random_object,
    generate_uniform_object,
)
from ptychodus.api.simulate.probe import generate_disk_probe, propagate_probe
from ptychodus.api.simulate.probe_positions import generate_cartesian_probe_positions

from ptycholib import archive, forward, metrics
from ptycholib import data as data_module
from ptycholib import ptychodus as adapter
from ptycholib.backends import is_available
from ptycholib.cli import main
from ptycholib.config import ConfigError, ModelConfig, TrainingConfig

N = 64
ENERGY_EV = 10_000.0
DETECTOR_DISTANCE_M = 2.0
DETECTOR_PIXEL_M = 75e-6
WAVELENGTH_M = 1.23984198e-6 / ENERGY_EV


def _probe_geometry():
    return ProbeGeometry.from_far_field(
        PixelGeometry(DETECTOR_PIXEL_M, DETECTOR_PIXEL_M), ImageExtent(N, N),
        wavelength_m=WAVELENGTH_M, distance_m=DETECTOR_DISTANCE_M,
    )


def _metadata(name="sim"):
    return ProductMetadata(
        name=name, comments="simulated by ptychodus.api.simulate", detector_distance_m=DETECTOR_DISTANCE_M,
        photon_energy_eV=ENERGY_EV, probe_photon_count=0.0, exposure_time_s=0.0,
        mass_attenuation_m2_per_kg=0.0, tomography_angle_deg=0.0,
    )


def simulate_scan(*, n_side, step_px, seed, blur_px=1.0, amplitude_deviation=0.25, phase_deviation_tr=0.15,
                  photons_per_pattern=None, noise=True):
    """Simulate a far-field scan with ptychodus's own generators; return the true product and patterns.

    Positions are a centred Cartesian grid with a whole-pixel step, so with an even ``n_side`` they
    sit on half pixels in ptychodus's convention (whole pixels in ours): ptychodus's simulator then
    applies no sub-pixel Fourier shift. ``photons_per_pattern`` rescales the probe (two passes). The
    object is ptychodus's random object: Gaussian amplitude and phase, deviations before the blur.
    """
    probe_geometry = _probe_geometry()
    dx = probe_geometry.pixel_width_m
    # a disk aperture 1 mm out of focus: ~23 px wide with 2 rad of phase. A real, centro-symmetric probe
    # would leave the twin image (O*(-r)) as an exact second solution for gridsize 1.
    aperture = generate_disk_probe(probe_geometry, radius_m=10 * dx)
    probe = propagate_probe(aperture, photon_wavelength_m=WAVELENGTH_M, propagation_distance_m=1e-3)
    positions = ProbePositionSequence(list(generate_cartesian_probe_positions(n_side, n_side, step_px * dx, step_px * dx)))
    object_geometry = compute_object_geometry(positions, probe_geometry)
    rng = np.random.default_rng(seed)
    obj = generate_random_object(rng, object_geometry, amplitude_mean=0.75 if blur_px < 3 else 0.6,
                                 amplitude_deviation=amplitude_deviation, phase_mean_tr=0.0,
                                 phase_deviation_tr=phase_deviation_tr, blur_deviation_px=blur_px)
    probes = ProbeSequence.from_probe(probe)
    truth = Product(_metadata(), positions, probes, obj, [])
    if photons_per_pattern is not None:
        mean_counts = generate_diffraction_data(truth).get_patterns().sum(axis=(1, 2)).mean()
        probes = ProbeSequence(probes.get_array() * np.sqrt(photons_per_pattern / mean_counts), None,
                               probes.get_pixel_geometry())
        truth = Product(_metadata(), positions, probes, obj, [])
    assembled = generate_diffraction_data(truth, rng=rng if noise else None)
    return SimpleNamespace(truth=truth, assembled=assembled, probe_geometry=probe_geometry)


def write_input_folder(folder, scan, *, bad_pixels=()):
    """Write ``diffraction.h5`` (integer counts) and ``product.h5`` (uniform initial object) with ptychodus's writers."""
    folder.mkdir(parents=True, exist_ok=True)
    patterns = np.rint(scan.assembled.get_patterns()).astype(np.uint32)
    mask = np.zeros((N, N), dtype=bool)
    for row, col in bad_pixels:
        mask[row, col] = True
    patterns[:, mask] = 0
    assembled = AssembledDiffractionData(scan.assembled.get_indexes(), patterns, scan.assembled.get_pixel_geometry(), mask)
    save_diffraction_data(folder / "diffraction.h5", assembled)
    truth = scan.truth
    initial = generate_uniform_object(truth.object_.get_geometry())
    save_product(folder / "product.h5", Product(truth.metadata, truth.probe_positions, truth.probes, initial, []))
    return folder


def score(obj, truth_obj, x_px, y_px):
    """Scores over the rectangle spanned by the scan positions, without registration (positions are absolute).

    Every pixel there is covered by many reassembly crops; the outer half crop of the scanned region,
    covered by a few patch edges only, is left out. Returns `metrics.evaluate_reconstruction`'s dict
    plus ``amplitude_correlation`` (Pearson, invariant to the global amplitude scale).
    """
    rows, cols = np.indices(truth_obj.shape)
    mask = ((cols >= x_px.min()) & (cols <= x_px.max()) & (rows >= y_px.min()) & (rows <= y_px.max()))
    scores = metrics.evaluate_reconstruction(obj, truth_obj, mask=mask, register=False)
    recon_amp, truth_amp = np.abs(obj)[mask], np.abs(truth_obj)[mask]
    scores["amplitude_correlation"] = float(np.corrcoef(recon_amp, truth_amp)[0, 1])
    return scores


# ----------------------------------------------------------------------------------------------
# conversions and conventions (fast, no backend needed)


def test_positions_follow_ptychodus_convention_by_resimulating_its_patterns():
    """ptychodus px + 0.5 (even N) is our window centre: our forward model reproduces its patterns."""
    scan = simulate_scan(n_side=4, step_px=7, seed=3, blur_px=0.0, noise=False)
    inp = prepare_reconstruct_input(scan.assembled, scan.truth)
    dataset = adapter.ptycho_data_from_input(inp)
    geometry = scan.truth.object_.get_geometry()
    x_ptychodus = geometry.map_probe_positions_to_object_x_px(scan.truth.probe_positions)
    np.testing.assert_allclose(dataset.x_px - x_ptychodus, 0.5)
    np.testing.assert_allclose(dataset.x_px, np.round(dataset.x_px), atol=1e-6)  # whole pixels: no Fourier shift

    # ptychodus's Fresnel-transform propagator multiplies the exit wave by exp(i pi Fr (X^2 + Y^2))
    # (X, Y from index N // 2) before its FFT; fold it into the probe, fit one global scale (its own
    # normalisation) and compare the pattern shapes.
    params = PropagatorParameters(wavelength_m=WAVELENGTH_M, width_px=N, height_px=N,
                                  pixel_width_m=geometry.pixel_width_m, pixel_height_m=geometry.pixel_height_m,
                                  propagation_distance_m=DETECTOR_DISTANCE_M)
    rows, cols = params.get_spatial_coordinates()
    probe = dataset.probe * np.exp(1j * np.pi * params.pixel_fresnel_number_x * (rows**2 + cols**2))
    truth_obj = scan.truth.object_.get_layer(0)

    def relative_error(shift):
        patches = forward.extract_patches(truth_obj, dataset.x_px + shift, dataset.y_px + shift, N)
        predicted = forward.far_field_amplitude(patches * probe).astype(np.float64)
        measured = dataset.amplitudes.astype(np.float64)
        scale = np.sum(predicted * measured) / np.sum(predicted**2)
        return np.linalg.norm(scale * predicted - measured) / np.linalg.norm(measured)

    right = relative_error(0.0)
    assert right < 1e-4, right
    # ptychodus's px unchanged (-0.5) or shifted the other way (+0.5): ~50 % error on this sharp object;
    # a whole pixel off: ~6.5 %
    for wrong, at_least in ((-0.5, 0.2), (0.5, 0.2), (-1.0, 0.03), (1.0, 0.03)):
        assert relative_error(wrong) > at_least, (wrong, relative_error(wrong))


def test_input_conversion_counts_bad_pixels_probe_modes_and_output_geometry(tmp_path):
    scan = simulate_scan(n_side=4, step_px=7, seed=1, photons_per_pattern=1e6)
    folder = write_input_folder(tmp_path / "in", scan, bad_pixels=[(3, 5), (60, 2)])
    inp = adapter.load_reconstruct_input(folder)
    counts = np.asarray(inp.diffraction_patterns)
    assert counts.dtype == np.uint32
    dataset = adapter.ptycho_data_from_input(inp)
    assert dataset.amplitudes.dtype == np.float32 and dataset.n_positions == 16
    np.testing.assert_allclose(dataset.amplitudes[:, 10, 30], np.sqrt(counts[:, 10, 30]), rtol=1e-6)
    assert dataset.bad_pixels.sum() == 2 and not dataset.amplitudes[:, 3, 5].any()
    assert dataset.obj.shape == (inp.product.object_.height_px, inp.product.object_.width_px)
    np.testing.assert_allclose(dataset.probe, inp.product.probes.get_array()[0, 0], rtol=1e-6)

    # two incoherent modes: mode 0 is used and its power share recorded
    probes = inp.product.probes.get_array()
    two_modes = np.concatenate([probes, 0.5 * probes[:, :, ::-1]], axis=1)
    product = Product(inp.product.metadata, inp.product.probe_positions,
                      ProbeSequence(two_modes, None, inp.product.probes.get_pixel_geometry()), inp.product.object_, [])
    moded = adapter.ptycho_data_from_input(type(inp)(inp.diffraction_patterns, inp.bad_pixels, product))
    assert moded.metadata["probe_modes"] == 2
    assert moded.metadata["probe_mode0_power_fraction"] == pytest.approx(0.8)

    obj = np.full(dataset.obj.shape, 0.5 + 0.5j, dtype=np.complex64)
    out = adapter.product_from_object(inp, obj)
    assert out.object_.get_geometry() == inp.product.object_.get_geometry()
    assert out.probes is inp.product.probes and out.probe_positions is inp.product.probe_positions

    with pytest.raises(ValueError, match="square"):
        adapter.ptycho_data_from_input(type(inp)(counts[:, :, :60], inp.bad_pixels, inp.product))


def test_export_training_data_writes_our_npz_contract(tmp_path):
    scan = simulate_scan(n_side=4, step_px=7, seed=2, photons_per_pattern=1e6)
    inp = adapter.load_reconstruct_input(write_input_folder(tmp_path / "in", scan))
    reconstructor = adapter.PtycholibReconstructor("torch", "pinn", adapter.PtycholibSettings(SettingsRegistry()))
    path = tmp_path / "train_data.npz"
    reconstructor.export_training_data(path, inp)
    loaded = data_module.load_npz(path)
    direct = adapter.ptycho_data_from_input(inp)
    np.testing.assert_array_equal(loaded.amplitudes, direct.amplitudes)
    np.testing.assert_array_equal(loaded.x_px, direct.x_px)
    assert loaded.metadata["measurement"] == "amplitude"


# ----------------------------------------------------------------------------------------------
# settings


def test_settings_expose_our_fields_with_our_defaults():
    registry = SettingsRegistry()
    settings = adapter.PtycholibSettings(registry)
    assert set(registry) == set(adapter.SETTINGS_GROUPS)
    config = settings.to_config(N=128, model_type="supervised", backend="tensorflow")
    assert config.model == ModelConfig(N=128, model_type="supervised")
    assert config.training == TrainingConfig(backend="tensorflow")
    registry["PtycholibModel"].parameters()["GridSize"].set_value(0)
    with pytest.raises(ConfigError, match=r"\[PtycholibModel\] GridSize"):
        settings.to_config(N=64)


def test_settings_file_round_trip(tmp_path):
    path = tmp_path / "settings.ini"
    assert main(["ptychodus", "settings", str(path), "--algorithm", "ptycholib_tensorflow",
                 "--set", "PtycholibTraining.NumEpochs=3", "PtycholibModel.GridSize=2",
                 "PtycholibTraining.EarlyStoppingPatience=4"]) == 0
    registry = SettingsRegistry()
    settings = adapter.PtycholibSettings(registry)
    registry.open_settings(path)
    config = settings.to_config(N=64)
    assert (config.training.nepochs, config.model.gridsize, config.training.early_stopping_patience) == (3, 2, 4)
    assert "Algorithm = ptycholib_tensorflow" in path.read_text()
    with pytest.raises(ValueError, match="unknown ptychodus setting"):
        adapter.write_settings(tmp_path / "bad.ini", overrides={"PtycholibTraining.Epochs": 3})


# ----------------------------------------------------------------------------------------------
# ModelCore injection and batch-mode failures (no training needed)


def test_injection_adds_our_library_to_model_core_and_restores_it(capsys):
    from ptychodus.model import core

    original = core.ProcessingCore
    with adapter.create_model_core() as model:
        keys = list(model.processing_core.processing_api.available_reconstructors())
        library = model.processing_core.ptycholib_library
    assert core.ProcessingCore is original
    assert set(adapter.algorithm_keys()) <= set(keys)
    assert library.name == "ptycholib" and "_" not in library.name
    assert all(reconstructor.get_model_file_extension() == ".zip" for reconstructor in library)
    assert main(["ptychodus", "list"]) == 0
    assert set(adapter.algorithm_keys()) <= set(capsys.readouterr().out.split())


@pytest.fixture(scope="module")
def small_input(tmp_path_factory):
    scan = simulate_scan(n_side=4, step_px=7, seed=5, photons_per_pattern=1e6)
    return write_input_folder(tmp_path_factory.mktemp("small") / "in", scan)


def test_unknown_algorithm_is_an_error_not_a_silent_exit_0(small_input, tmp_path, capsys):
    # what the check protects against: plain ptychodus runs nothing and reports success
    adapter.write_settings(small_input / "settings.ini", algorithm="ptycholib_nosuchthing")
    try:
        with adapter.create_model_core() as model:
            status = model.batch_mode_execute("reconstruct", small_input, tmp_path / "raw")
        assert status == 0 and not list((tmp_path / "raw").glob("product*.h5"))

        with pytest.raises(ValueError, match="unknown ptychodus algorithm 'ptycholib_nosuchthing'.*ptycholib_torch"):
            adapter.run_batch("reconstruct", small_input, tmp_path / "out")
        assert main(["ptychodus", "reconstruct", str(small_input), str(tmp_path / "out"),
                     "--algorithm", "pty-chi_nope"]) == 2
        assert "unknown ptychodus algorithm 'pty-chi_nope'" in capsys.readouterr().err
    finally:
        (small_input / "settings.ini").unlink()


def test_missing_model_is_an_error_not_a_silent_exit_0(small_input, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model to reconstruct with"):
        adapter.run_batch("reconstruct", small_input, tmp_path / "out", algorithm="ptycholib_torch")
    # without our pre-check, ptychodus's own batch mode reports our reconstructor's error as a failure
    adapter.write_settings(small_input / "settings.ini", algorithm="ptycholib_torch")
    try:
        with adapter.create_model_core() as model:
            status = model.batch_mode_execute("reconstruct", small_input, tmp_path / "raw")
            error = model.processing_core.processing_api.task_monitor.get_last_error()
    finally:
        (small_input / "settings.ini").unlink()
    assert status == 1 and "no model is loaded" in str(error)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        adapter.run_batch("reconstruct", small_input, tmp_path / "out", model_path=tmp_path / "missing.zip")


# ----------------------------------------------------------------------------------------------
# end to end: ptychodus simulation -> our TrainableReconstructor -> ptychodus batch mode

FRAMEWORKS = {"torch": "torch", "tensorflow": "tensorflow"}
# Tiny but learnable in seconds on a CPU, with the default sigmoid amplitude head (it trains since the
# initial intensity scale matches the data at the sigmoid's midpoint, forward.initial_intensity_scale).
TRAIN_SETTINGS = {
    "PtycholibModel.NumFiltersScale": 1,
    "PtycholibTraining.NumEpochs": 3,
    "PtycholibTraining.NumGroups": 256,
    "PtycholibTraining.BatchSize": 16,
}
MIN_AMPLITUDE_CORRELATION = 0.4
"""Amplitude correlation with the truth inside the rectangle spanned by the positions, no registration.

Measured after 3 epochs: 0.72 (torch); an untrained model scores ~0 and a collapsed (saturated) one
below 0. Reported in docs/ptychodus.md."""


@pytest.fixture(scope="module")
def scan_folder(tmp_path_factory):
    """256 positions (16 x 16, step 5 px) on a 139 x 139 px object, 1e8 photons per pattern.

    Features of ~10 px (blur 6 px), amplitude 0.6 +- 0.13 (0.2 to 1.1), phase +- 0.5 rad.
    """
    scan = simulate_scan(n_side=16, step_px=5, seed=0, blur_px=6.0, amplitude_deviation=3.0, phase_deviation_tr=1.5,
                         photons_per_pattern=1e8)
    folder = write_input_folder(tmp_path_factory.mktemp("scan") / "in", scan, bad_pixels=[(1, 2)])
    dataset = adapter.ptycho_data_from_input(adapter.load_reconstruct_input(folder))
    return SimpleNamespace(folder=folder, truth=scan.truth, x_px=dataset.x_px, y_px=dataset.y_px)


@pytest.fixture(scope="module", params=sorted(FRAMEWORKS))
def trained(request, scan_folder, tmp_path_factory):
    """Train through ptychodus's batch mode: ModelCore -> our TrainableReconstructor.train."""
    backend = request.param
    pytest.importorskip(FRAMEWORKS[backend])
    root = tmp_path_factory.mktemp(f"train_{backend}")
    train_in = root / "in"
    shutil.copytree(scan_folder.folder, train_in)
    adapter.write_settings(train_in / "settings.ini", algorithm=f"ptycholib_{backend}", overrides=TRAIN_SETTINGS)
    result = adapter.run_batch("train", train_in, root / "out")
    return SimpleNamespace(backend=backend, model_path=result.model_path, out=root / "out", settings=train_in / "settings.ini")


@pytest.mark.slow
def test_batch_mode_train_then_reconstruct(trained, scan_folder, tmp_path):
    history = (trained.out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + TRAIN_SETTINGS["PtycholibTraining.NumEpochs"] and "val_loss" in history[0]

    recon_in = tmp_path / "in"
    shutil.copytree(scan_folder.folder, recon_in)
    shutil.copy(trained.settings, recon_in / "settings.ini")
    shutil.copy(trained.model_path, recon_in / "model.zip")
    out = tmp_path / "out"
    assert main(["ptychodus", "reconstruct", str(recon_in), str(out)]) == 0
    products = sorted(out.glob("product.*.h5"))
    assert [p.name for p in products] == ["product.000001.h5"]

    result = load_product(products[0])
    expected = load_product(recon_in / "product.h5").object_
    assert result.object_.get_geometry() == expected.get_geometry()  # shape, pixel size and centre
    obj = result.object_.get_layer(0)
    scores = score(obj, scan_folder.truth.object_.get_layer(0), scan_folder.x_px, scan_folder.y_px)
    print(f"{trained.backend} batch mode: {scores['amplitude_correlation']=:.3f} {scores['amplitude_ssim']=:.3f}")
    assert scores["amplitude_correlation"] > MIN_AMPLITUDE_CORRELATION, scores


@pytest.mark.slow
def test_pure_api_prepare_reconstruct_save(trained, scan_folder, tmp_path):
    inp = adapter.load_reconstruct_input(scan_folder.folder)
    reconstructor = adapter.PtycholibReconstructor(trained.backend, "pinn", adapter.PtycholibSettings(SettingsRegistry()))
    assert not reconstructor.is_model_loaded()
    reconstructor.load_model_from_file(trained.model_path)
    outputs = list(reconstructor.reconstruct(inp))
    assert len(outputs) == 1 and outputs[0].progress == reconstructor.get_progress_goal() == 1
    save_product(tmp_path / "result.h5", outputs[0].product)
    result = load_product(tmp_path / "result.h5")
    assert result.object_.get_geometry() == inp.product.object_.get_geometry()
    obj = result.object_.get_layer(0)
    np.testing.assert_allclose(obj, reconstructor.last_reconstruction.obj, rtol=1e-6, atol=1e-6)
    scores = score(obj, scan_folder.truth.object_.get_layer(0), scan_folder.x_px, scan_folder.y_px)
    assert scores["amplitude_correlation"] > MIN_AMPLITUDE_CORRELATION, scores

    reconstructor.save_model(tmp_path / "copy.zip")
    assert archive.load_model(tmp_path / "copy.zip").backend == trained.backend

    other = "tensorflow" if trained.backend == "torch" else "torch"
    if is_available(other):  # one archive format: the other backend's reconstructor predicts the same object
        crossed = adapter.PtycholibReconstructor(other, "pinn", adapter.PtycholibSettings(SettingsRegistry()))
        crossed.load_model_from_file(trained.model_path)
        *_, last = crossed.reconstruct(inp)
        difference = np.abs(last.product.object_.get_layer(0) - obj).max()
        assert difference <= 1e-3 * np.abs(obj).max(), difference


@pytest.mark.slow
def test_batch_mode_honours_refine_iterations(trained, scan_folder, tmp_path):
    """PtycholibInference.RefineIterations: 0 is the network alone, K > 0 refines through the physics."""
    correlation = {}
    for iterations in (0, 5):
        recon_in = tmp_path / f"in_{iterations}"
        shutil.copytree(scan_folder.folder, recon_in)
        adapter.write_settings(recon_in / "settings.ini", algorithm=f"ptycholib_{trained.backend}", overrides={
            **TRAIN_SETTINGS, "PtycholibInference.RefineIterations": iterations, "PtycholibInference.RefineAlpha": 0.3})
        shutil.copy(trained.model_path, recon_in / "model.zip")
        out = tmp_path / f"out_{iterations}"
        assert main(["ptychodus", "reconstruct", str(recon_in), str(out)]) == 0
        obj = load_product(sorted(out.glob("product.*.h5"))[0]).object_.get_layer(0)
        scores = score(obj, scan_folder.truth.object_.get_layer(0), scan_folder.x_px, scan_folder.y_px)
        correlation[iterations] = scores["amplitude_correlation"]
    print(f"{trained.backend}: amplitude correlation network {correlation[0]:.3f}, + 5 sweeps {correlation[5]:.3f}")
    assert correlation[5] > correlation[0] + 0.05, correlation


@pytest.mark.slow
def test_train_on_a_loaded_model_fine_tunes_it(trained, scan_folder, tmp_path):
    inp = adapter.load_reconstruct_input(scan_folder.folder)
    registry = SettingsRegistry()
    settings = adapter.PtycholibSettings(registry)  # creates the groups that open_settings then fills
    registry.open_settings(adapter.write_settings(tmp_path / "settings.ini", overrides={
        **TRAIN_SETTINGS, "PtycholibTraining.NumEpochs": 1, "PtycholibTraining.NumGroups": 36}))
    reconstructor = adapter.PtycholibReconstructor(trained.backend, "pinn", settings)
    reconstructor.load_model_from_file(trained.model_path)
    parent = archive.load_model(trained.model_path)
    (tmp_path / "train").mkdir()
    reconstructor.export_training_data(tmp_path / "train" / "train_data.npz", inp)
    outputs = list(reconstructor.train(tmp_path / "train", tmp_path / "out"))
    assert outputs and reconstructor.model_archive.parent == {
        "name": trained.model_path.name, "sha256": archive.file_sha256(trained.model_path)}
    saved = archive.load_model(tmp_path / "out" / archive.DEFAULT_NAME)
    assert saved.parent == reconstructor.model_archive.parent and saved.config.model == parent.config.model
    changed = [name for name in parent.weights if not np.array_equal(parent.weights[name], saved.weights[name])]
    assert changed, "fine-tuning left every weight unchanged"


def train_small(tmp_path, inp, algorithm_suffix, settings):
    """Export ``inp`` as IN/train_data.npz and train the first installed backend's reconstructor on it."""
    backend = next((name for name in sorted(FRAMEWORKS) if is_available(name)), None)
    if backend is None:
        pytest.skip("neither torch nor tensorflow is installed")
    registry = SettingsRegistry()
    library = adapter.PtycholibReconstructorLibrary(registry, backends=[backend])
    registry.open_settings(adapter.write_settings(tmp_path / "settings.ini", overrides={
        "PtycholibModel.NumFiltersScale": 1, "PtycholibTraining.NumGroups": 36, **settings}))
    reconstructor = library.get(f"ptycholib_{backend}{algorithm_suffix}")
    (tmp_path / "train").mkdir()
    reconstructor.export_training_data(tmp_path / "train" / "train_data.npz", inp)
    return reconstructor, list(reconstructor.train(tmp_path / "train", tmp_path / "out"))


@pytest.mark.slow
def test_train_streams_per_epoch_losses_from_exported_training_data(tmp_path):
    scan = simulate_scan(n_side=6, step_px=5, seed=4, photons_per_pattern=1e7)
    inp = adapter.load_reconstruct_input(write_input_folder(tmp_path / "scan", scan))
    reconstructor, outputs = train_small(tmp_path, inp, "", {"PtycholibTraining.NumEpochs": 2,
                                                             "PtycholibTraining.ValidationFraction": 0.25})
    assert all(isinstance(output, TrainOutput) for output in outputs)
    assert [len(output.training_loss) for output in outputs] == [1, 2, 2]
    assert [output.progress for output in outputs] == [1, 2, 2] and reconstructor.get_progress_goal() == 2
    assert len(outputs[-1].validation_loss) == 2
    assert all(np.isfinite(loss.value) for loss in outputs[-1].training_loss)
    # the curves are the Poisson deviance per pixel, positive and readable on a log axis
    assert [loss.value for loss in outputs[-1].training_loss] == [r["deviance"] for r in reconstructor.last_history]
    assert [loss.value for loss in outputs[-1].validation_loss] == [r["val_deviance"] for r in reconstructor.last_history]
    assert all(loss.value > 0 for loss in outputs[-1].training_loss)
    assert (tmp_path / "out" / "wts.h5.zip").is_file() and reconstructor.is_model_loaded()


def test_train_output_streams_the_deviance_or_else_the_loss():
    from ptycholib.ptychodus.reconstructor import _train_output

    records = [{"epoch": 0, "loss": -5.0, "val_loss": -4.0, "deviance": 3.0, "val_deviance": 2.5}]
    output = _train_output(records, progress=1)
    assert [v.value for v in output.training_loss] == [3.0] and [v.value for v in output.validation_loss] == [2.5]
    supervised = [dict(records[0], deviance=float("nan"), val_deviance=float("nan"))]
    assert [v.value for v in _train_output(supervised, progress=1).training_loss] == [-5.0]


@pytest.mark.slow
def test_supervised_reconstructor_trains_against_the_product_object(tmp_path):
    scan = simulate_scan(n_side=6, step_px=5, seed=6, photons_per_pattern=1e7)
    inp = prepare_reconstruct_input(scan.assembled, scan.truth)  # its product holds the true object
    reconstructor, outputs = train_small(tmp_path, inp, "-supervised", {"PtycholibTraining.NumEpochs": 1})
    assert outputs[-1].training_loss and reconstructor.model_archive.config.model.model_type == "supervised"
    *_, last = reconstructor.reconstruct(inp)
    assert last.product.object_.get_geometry() == inp.product.object_.get_geometry()
