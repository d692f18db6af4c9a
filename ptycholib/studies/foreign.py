"""Scans from another simulator: ptychodus's own ``ptychodus.api.simulate``, read back through its files.

ptycholib's simulator (`ptycholib.simulate`) shares its conventions with ptycholib's networks: the
same forward model, probe families and object textures. A network scored only on such scans may
have learnt the simulator rather than the physics. This module makes scans with the *other*
simulator shipped with ptychodus 1.7.0, with another probe and object family:

- probe: a disk aperture (radius ``10 * lambda z / (64 p)`` m, ten pixels at N = 64) propagated
  1 mm out of focus by ptychodus's angular-spectrum propagator (``generate_disk_probe`` +
  ``propagate_probe``): a ring-structured, complex, not centro-symmetric probe;
- object: ptychodus's random object (``generate_random_object``), Gaussian amplitude and phase
  (deviations drawn before a Gaussian blur of ``blur_px``), see `OBJECT_PARAMETERS`;
- positions: a centred Cartesian grid (``generate_cartesian_probe_positions``) in metres, on a
  canvas just large enough for every window;
- patterns: ptychodus's far-field forward model (``generate_diffraction_data``, Fresnel-transform
  propagator to a 75 um detector 2 m away at 10 keV) with Poisson noise, rounded to ``uint32``
  counts as a detector would give.

The scan goes to disk with ptychodus's writers (``diffraction.h5`` + ``product.h5``, the product
holding the *true* object and probe) and comes back through `ptycholib.ptychodus.load_ptychodus_h5`, the
path a beamline user takes: counts become amplitudes, positions in metres become our window centres
(ptychodus pixel + 0.5 for even N, SPEC section 10).

Two things differ from a scan made by `ptycholib.simulate`, both by ptychodus's design:

- the photon scale: ptychodus's propagator has its own normalisation, so the stored probe's absolute
  size says nothing about the counts; fit the intensity scale from the data (SPEC section 10);
- a quadratic phase: ptychodus's Fresnel-transform propagator multiplies the exit wave by
  ``exp(i pi r**2 / (lambda z))`` before its FFT, which the stored probe lacks. For this geometry
  the phase is at most 0.07 rad at the window's corners (about 0.015 rad over the probe), so the
  stored probe is a close but not exact object-grid ``probeGuess``; `fresnel_probe` folds the phase
  in. `simulate_ptychodus_scan` returns the file's probe unchanged, as a user would get it.

Make a training and a held-out test scan (and NPZ copies for ``ptycholib.studies.convergence``)::

    python -m ptycholib.studies.foreign --out build/data_ptychodus --photons 1e9
    python -m ptycholib.studies.convergence --data build/data_ptychodus --out build/study_ptychodus ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from ptycholib import data as data_module
from ptycholib import simulate
from ptycholib.ptychodus.files import load_ptychodus_h5

__all__ = [
    "DETECTOR_DISTANCE_M",
    "DETECTOR_PIXEL_M",
    "ENERGY_EV",
    "OBJECT_PARAMETERS",
    "PROBE_DEFOCUS_M",
    "fresnel_probe",
    "main",
    "object_contrast",
    "scanned_region",
    "simulate_ptychodus_scan",
    "simulate_ptychodus_train_test",
]

#: Photon energy (eV), detector distance (m) and detector pixel (m) of the simulated beamline.
ENERGY_EV = 10_000.0
DETECTOR_DISTANCE_M = 2.0
DETECTOR_PIXEL_M = 75e-6
#: Distance (m) by which the disk aperture is propagated out of focus.
PROBE_DEFOCUS_M = 1e-3
#: Disk radius in object pixels at N = 64 (the physical radius is the same for every N).
PROBE_RADIUS_PX_AT_64 = 10.0

#: ptychodus ``generate_random_object`` parameters (deviations before the blur). With a 1.5 px blur
#: they give an amplitude of std ~0.09 around 0.6 (range ~0.2-1.0) and a phase of std ~0.35 rad;
#: ptychodus's example values (0.75, 0.25, 0.15 turns) leave only ~0.05 of amplitude std.
OBJECT_PARAMETERS = {
    "amplitude_mean": 0.6,
    "amplitude_deviation": 0.5,
    "phase_mean_tr": 0.0,
    "phase_deviation_tr": 0.3,
}

_PLANCK_EV_M = 1.239841984e-6  # h c in eV m


def _wavelength_m(energy_ev):
    return _PLANCK_EV_M / float(energy_ev)


def _import_ptychodus():
    try:
        from ptychodus.api.assemble import AssembledDiffractionData
        from ptychodus.api.geometry import ImageExtent, PixelGeometry
        from ptychodus.api.io import save_diffraction_data, save_product
        from ptychodus.api.object import compute_object_geometry
        from ptychodus.api.probe import ProbeGeometry, ProbeSequence
        from ptychodus.api.probe_positions import ProbePositionSequence
        from ptychodus.api.product import Product, ProductMetadata
        from ptychodus.api.simulate.diffraction import generate_diffraction_data
        from ptychodus.api.simulate.object import generate_random_object
        from ptychodus.api.simulate.probe import generate_disk_probe, propagate_probe
        from ptychodus.api.simulate.probe_positions import generate_cartesian_probe_positions
    except ImportError as error:
        raise ImportError(
            f"ptycholib.studies.foreign simulates with ptychodus 1.7.0, which could not be imported ({error}); "
            "install it (pip install ptychodus==1.7.0)."
        ) from error
    return dict(locals())


def _ptychodus_version():
    try:
        from importlib.metadata import version

        return version("ptychodus")
    except Exception:  # noqa: BLE001 - provenance only
        return "unknown"


def simulate_ptychodus_scan(
    folder,
    *,
    n_side=30,
    step_px=4,
    seed=0,
    photons_per_pattern=1e9,
    blur_px=1.5,
    patch_size=64,
    amplitude_mean=OBJECT_PARAMETERS["amplitude_mean"],
    amplitude_deviation=OBJECT_PARAMETERS["amplitude_deviation"],
    phase_deviation_tr=OBJECT_PARAMETERS["phase_deviation_tr"],
):
    """Simulate a far-field scan with ptychodus, write it with ptychodus's writers, load it as ptycholib data.

    Parameters
    ----------
    folder : str or Path
        Created if needed; receives ``diffraction.h5`` (``uint32`` counts, no bad pixels) and
        ``product.h5`` (true object, true probe scaled to the photon count, positions in metres).
    n_side : int
        Positions per side of the square Cartesian grid (``n_side**2`` patterns).
    step_px : int
        Grid step in object pixels. The canvas is ``(n_side - 1) * step_px + N`` pixels wide (windows
        touch its edges); with a whole-pixel step every position sits on a whole pixel in our
        convention (a half pixel in ptychodus's), so neither ptychodus's sub-pixel Fourier shift nor
        our bilinear interpolation is involved.
    seed : int
        Seeds the object and the Poisson noise (one ``numpy.random.default_rng(seed)``).
    photons_per_pattern : float
        Mean counts per pattern; the probe is rescaled to give it (expected value, before noise).
    blur_px : float
        Gaussian blur (std, pixels) of the object's amplitude and phase.
    patch_size : int
        N, the side of patterns and probe (64, 128 or 256). The probe's physical size is fixed, so
        it spans the same fraction of the window's field of view for every N.
    amplitude_mean, amplitude_deviation, phase_deviation_tr : float
        ptychodus ``generate_random_object`` parameters (deviations before the blur; phase in turns).

    Returns
    -------
    ptycholib.data.PtychoData
        `ptycholib.ptychodus.load_ptychodus_h5` of the two files, with the truth as ``obj``, the file's
        probe (see the module notes on its quadratic phase) and provenance added to ``metadata``
        (``generator``, ``seed``, ``nphotons``, ``mean_counts_per_pattern``, object and probe
        parameters).

    Raises
    ------
    ValueError
        For a non-positive ``n_side``, ``step_px`` or ``photons_per_pattern``, or counts that would
        overflow ``uint32``.
    """
    if int(n_side) != n_side or n_side < 1:
        raise ValueError(f"n_side must be a positive integer; got {n_side!r}.")
    if not step_px > 0:
        raise ValueError(f"step_px must be > 0; got {step_px!r}.")
    if not photons_per_pattern > 0:
        raise ValueError(f"photons_per_pattern must be > 0 (mean counts per pattern); got {photons_per_pattern!r}.")
    n_side, patch_size = int(n_side), int(patch_size)
    pd = _import_ptychodus()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wavelength_m = _wavelength_m(ENERGY_EV)

    probe_geometry = pd["ProbeGeometry"].from_far_field(
        pd["PixelGeometry"](DETECTOR_PIXEL_M, DETECTOR_PIXEL_M), pd["ImageExtent"](patch_size, patch_size),
        wavelength_m=wavelength_m, distance_m=DETECTOR_DISTANCE_M,
    )
    dx = probe_geometry.pixel_width_m
    radius_m = PROBE_RADIUS_PX_AT_64 * wavelength_m * DETECTOR_DISTANCE_M / (64 * DETECTOR_PIXEL_M)
    aperture = pd["generate_disk_probe"](probe_geometry, radius_m=radius_m)
    probe = pd["propagate_probe"](aperture, photon_wavelength_m=wavelength_m, propagation_distance_m=PROBE_DEFOCUS_M)

    positions = pd["ProbePositionSequence"](
        list(pd["generate_cartesian_probe_positions"](n_side, n_side, step_px * dx, step_px * dx))
    )
    # ptychodus sizes the canvas with ceil((scan + probe extent) / pixel) in floating point, which
    # lands one pixel over at random (85 instead of 84): an odd-sized canvas moves every window centre
    # by half a pixel. Fix the size exactly: (n_side - 1) * step + N, so that the first window starts
    # at pixel 0, the last ends at the canvas edge and window centres sit at (N - 1) / 2 + k * step in
    # ptychodus's convention (k * step + N // 2 in ours: whole pixels for even N and a whole step).
    extent_px = int(np.ceil((n_side - 1) * step_px - 1e-6)) + patch_size
    object_geometry = dataclasses.replace(
        pd["compute_object_geometry"](positions, probe_geometry), width_px=extent_px, height_px=extent_px
    )
    rng = np.random.default_rng(seed)
    obj = pd["generate_random_object"](
        rng, object_geometry, amplitude_mean=amplitude_mean, amplitude_deviation=amplitude_deviation,
        phase_mean_tr=0.0, phase_deviation_tr=phase_deviation_tr, blur_deviation_px=blur_px,
    )
    parameters = {
        "generator": "ptychodus.api.simulate",
        "ptychodus_version": _ptychodus_version(),
        "seed": int(seed),
        "nphotons": float(photons_per_pattern),
        "n_side": n_side,
        "step_px": float(step_px),
        "object_family": "ptychodus random object (Gaussian amplitude and phase, blurred)",
        "object_parameters": {"amplitude_mean": amplitude_mean, "amplitude_deviation": amplitude_deviation,
                              "phase_mean_tr": 0.0, "phase_deviation_tr": phase_deviation_tr, "blur_px": blur_px},
        "probe_family": "ptychodus disk aperture, angular-spectrum propagated",
        "probe_parameters": {"radius_m": radius_m, "defocus_m": PROBE_DEFOCUS_M},
    }
    metadata = pd["ProductMetadata"](
        name=folder.name or "foreign", comments=json.dumps(parameters), detector_distance_m=DETECTOR_DISTANCE_M,
        photon_energy_eV=ENERGY_EV, probe_photon_count=0.0, exposure_time_s=0.0,
        mass_attenuation_m2_per_kg=0.0, tomography_angle_deg=0.0,
    )
    probes = pd["ProbeSequence"].from_probe(probe)
    product = pd["Product"](metadata, positions, probes, obj, [])

    # One noiseless pass fixes the photon scale. Intensity is linear in |probe|**2, so scaling the
    # expected patterns and drawing Poisson counts is what ptychodus's `generate_diffraction_data(
    # product_with_scaled_probe, rng)` does (its noise step is `rng.poisson(patterns)`), in one pass.
    expected = pd["generate_diffraction_data"](product)
    patterns = expected.get_patterns()
    scale = float(photons_per_pattern) / float(patterns.sum(axis=(1, 2)).mean())
    counts = np.rint(rng.poisson(patterns * scale))
    if counts.max() >= 2**32:
        raise ValueError(f"a pixel holds {counts.max():.3g} counts, more than uint32 holds; lower photons_per_pattern.")
    counts = counts.astype(np.uint32)
    scaled_probes = pd["ProbeSequence"](probes.get_array() * np.sqrt(scale), None, probes.get_pixel_geometry())
    truth = pd["Product"](metadata, positions, scaled_probes, obj, [])
    assembled = pd["AssembledDiffractionData"](
        expected.get_indexes(), counts, expected.get_pixel_geometry(), np.zeros(counts.shape[-2:], dtype=bool)
    )
    diffraction_path, product_path = folder / "diffraction.h5", folder / "product.h5"
    pd["save_diffraction_data"](diffraction_path, assembled)
    pd["save_product"](product_path, truth)

    loaded = load_ptychodus_h5(diffraction_path, product_path)
    parameters["mean_counts_per_pattern"] = float(counts.sum(axis=(1, 2), dtype=np.float64).mean())
    return dataclasses.replace(loaded, metadata={**loaded.metadata, **parameters})


def simulate_ptychodus_train_test(out_dir, *, n_side_train=40, n_side_test=30, step_px=4, seed=0,
                                  photons_per_pattern=1e9, **options):
    """Simulate a training scan and a held-out test scan of two independent ptychodus objects.

    Parameters
    ----------
    out_dir : str or Path
        Receives ``train/`` and ``test/`` (each ``diffraction.h5`` + ``product.h5``) and
        ``train.npz``, ``test.npz`` in ptycholib's NPZ contract (`ptycholib.data.save_npz`), the
        layout ``python -m ptycholib.studies.convergence --data out_dir`` reads.
    n_side_train, n_side_test : int
        Grid sides of the two scans.
    step_px : int
    seed : int
        The training scan uses seed ``2 * seed``, the test scan ``2 * seed + 1``: different objects
        and noise, and no overlap between the scans of different ``seed`` values.
    photons_per_pattern : float
    **options
        Passed to `simulate_ptychodus_scan` (``blur_px``, ``patch_size``, object parameters).

    Returns
    -------
    tuple of ptycholib.data.PtychoData
        ``(train, test)``, each with its true object.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scans = []
    for name, n_side, scan_seed in (("train", n_side_train, 2 * seed), ("test", n_side_test, 2 * seed + 1)):
        scan = simulate_ptychodus_scan(out_dir / name, n_side=n_side, step_px=step_px, seed=scan_seed,
                                       photons_per_pattern=photons_per_pattern, **options)
        scan = dataclasses.replace(scan, metadata={**scan.metadata, "split": name})
        data_module.save_npz(scan, out_dir / f"{name}.npz")
        scans.append(scan)
    return tuple(scans)


def scanned_region(data):
    """Return the boolean mask of the rectangle spanned by the window centres on ``data.obj``."""
    rows, cols = np.indices(data.obj.shape)
    return (cols >= data.x_px.min()) & (cols <= data.x_px.max()) & (rows >= data.y_px.min()) & (rows <= data.y_px.max())


def object_contrast(data):
    """Return the true object's amplitude mean/std/range and phase std (rad) over the scanned region.

    Parameters
    ----------
    data : ptycholib.data.PtychoData
        With its true object.

    Returns
    -------
    dict of str to float
        ``amplitude_mean``, ``amplitude_std``, ``amplitude_min``, ``amplitude_max``, ``phase_std_rad``.
    """
    values = data.obj[scanned_region(data)]
    amplitude = np.abs(values).astype(np.float64)
    phase = np.angle(values * np.exp(-1j * np.angle(values.mean())))
    return {"amplitude_mean": float(amplitude.mean()), "amplitude_std": float(amplitude.std()),
            "amplitude_min": float(amplitude.min()), "amplitude_max": float(amplitude.max()),
            "phase_std_rad": float(phase.std())}


def fresnel_probe(data):
    """Return the data's probe times ptychodus's far-field quadratic phase: the exact object-grid probe.

    ptychodus's Fresnel-transform propagator multiplies the exit wave by
    ``exp(i pi ((X dx)**2 + (Y dy)**2) / (lambda z))``, ``X, Y`` counted from index ``N // 2``,
    before its FFT. Folding that phase into the probe makes ptycholib's far-field model reproduce
    ptychodus's patterns up to one global scale (the propagator's normalisation).

    Parameters
    ----------
    data : ptycholib.data.PtychoData
        Loaded from a ptychodus pair (its metadata gives ``photon_energy_eV``,
        ``detector_object_distance_m`` and ``object_pixel_size_m``).

    Returns
    -------
    ndarray of shape (N, N), complex64
    """
    metadata = data.metadata
    needed = ("photon_energy_eV", "detector_object_distance_m", "object_pixel_size_m")
    missing = [key for key in needed if key not in metadata]
    if missing:
        raise ValueError(f"the data's metadata lacks {', '.join(missing)}; load it with load_ptychodus_h5.")
    wavelength_m = _wavelength_m(metadata["photon_energy_eV"])
    distance_m = float(metadata["detector_object_distance_m"])
    dx, dy = (float(v) for v in metadata["object_pixel_size_m"])
    coords = np.arange(data.patch_size) - data.patch_size // 2
    phase = np.pi * ((coords[None, :] * dx) ** 2 + (coords[:, None] * dy) ** 2) / (wavelength_m * distance_m)
    return (data.probe * np.exp(1j * phase)).astype(np.complex64)


def _describe(name, scan):
    contrast = object_contrast(scan)
    return (
        f"{name}: amplitudes {scan.amplitudes.shape}, object {scan.obj.shape}, probe {scan.probe.shape}, "
        f"positions x {scan.x_px.min():g}..{scan.x_px.max():g} y {scan.y_px.min():g}..{scan.y_px.max():g} px\n"
        f"  mean counts per pattern {scan.metadata['mean_counts_per_pattern']:.4g}, "
        f"probe diameter (90 % power) {simulate.probe_diameter_px(scan.probe):.1f} px\n"
        f"  object amplitude {contrast['amplitude_mean']:.3f} +- {contrast['amplitude_std']:.3f} "
        f"(range {contrast['amplitude_min']:.3f}..{contrast['amplitude_max']:.3f}), "
        f"phase std {contrast['phase_std_rad']:.3f} rad (scanned region)"
    )


def main(argv=None):
    """Command line: ``python -m ptycholib.studies.foreign --out DIR [--photons P] [--n-side-train A] ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m ptycholib.studies.foreign",
        description="Simulate a training and a held-out test scan with ptychodus's own simulator and write "
                    "them as ptychodus files and ptycholib NPZ files.",
    )
    parser.add_argument("--out", required=True, help="output folder (train/, test/, train.npz, test.npz)")
    parser.add_argument("--photons", type=float, default=1e9, help="mean counts per pattern (default 1e9)")
    parser.add_argument("--n-side-train", type=int, default=40, help="training grid side (default 40)")
    parser.add_argument("--n-side-test", type=int, default=30, help="test grid side (default 30)")
    parser.add_argument("--step", type=float, default=4, help="grid step in object pixels (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed (train 2*seed, test 2*seed+1; default 0)")
    args = parser.parse_args(argv)
    try:
        train, test = simulate_ptychodus_train_test(
            args.out, n_side_train=args.n_side_train, n_side_test=args.n_side_test, step_px=args.step,
            seed=args.seed, photons_per_pattern=args.photons,
        )
    except (ImportError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(_describe("train", train))
    print(_describe("test", test))
    print(f"wrote {Path(args.out) / 'train'}, {Path(args.out) / 'test'}, train.npz and test.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
