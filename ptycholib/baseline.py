"""Iterative baseline: ePIE with the known probe, through PtyLab and as a sub-pixel NumPy version.

SPEC section 7 asks for honesty beside any comparison: **PtyLab's ePIE rounds every scan position to
the nearest whole pixel**, which caps its quality on high-dose data with sub-pixel positions. Prefer
scans on whole pixels when PtyLab is the reference, and use `epie_numpy` (bilinear sub-pixel
positions, the same forward model as `ptycholib.forward`) as a second reference. Both keep the probe
fixed, so they are compared with the network on equal terms (known probe, same data). Used in
notebook 04.

Forward model of both: ``a = |fftshift(fft2(P_eff * O_k))| / N`` (PtyLab's unitary ``fft2c`` gives
the same modulus), with ``P_eff`` the given probe, by default rescaled so that a unit-modulus object
reproduces the mean measured energy (the probe's absolute size is never trusted, SPEC section 10).
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass

import numpy as np

from ptycholib import forward
from ptycholib.reassemble import scatter_add_patches

__all__ = ["EPIEResult", "epie", "epie_numpy", "epie_ptylab", "effective_probe", "ptylab_available", "ENGINES"]

ENGINES = ("numpy", "ptylab")


def ptylab_available():
    """True when the optional PtyLab package (``pip install ptylab``) is installed."""
    import importlib.util

    return importlib.util.find_spec("PtyLab") is not None or importlib.util.find_spec("ptylab") is not None


@dataclass(frozen=True)
class EPIEResult:
    """Output of an ePIE run.

    Attributes
    ----------
    obj : ndarray of shape (rows, cols), complex64
        Reconstructed object on the data's object grid (the initial value, 1, where no probe reached).
    errors : ndarray of shape (n_iterations,), float64
        The engine's own error per iteration: for ``"numpy"`` the normalised Fourier-amplitude error
        ``sum (|F psi| / N - a)^2 / sum a^2`` before each sweep's updates; for ``"ptylab"`` PtyLab's
        ``reconstruction.error`` (summed normalised intensity error).
    seconds : float
        Wall-clock time of the iterations (set-up excluded).
    engine : str
        ``"numpy"`` or ``"ptylab"``.
    probe_scale : float
        Factor the given probe was multiplied by (1 without ``fit_probe_power``).
    """

    obj: np.ndarray
    errors: np.ndarray
    seconds: float
    engine: str
    probe_scale: float


def _check_inputs(amplitudes, x_px, y_px, probe, canvas_shape, n_iterations):
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    if amplitudes.ndim != 3 or amplitudes.shape[1] != amplitudes.shape[2]:
        raise ValueError(f"amplitudes must have shape (n_positions, N, N); got {amplitudes.shape}.")
    if not np.all(np.isfinite(amplitudes)) or np.any(amplitudes < 0):
        raise ValueError("amplitudes must be finite and >= 0 (square roots of counts).")
    n_positions, patch_size = amplitudes.shape[0], amplitudes.shape[-1]
    x_px = np.asarray(x_px, dtype=np.float64)
    y_px = np.asarray(y_px, dtype=np.float64)
    for name, values in (("x_px", x_px), ("y_px", y_px)):
        if values.shape != (n_positions,) or not np.all(np.isfinite(values)):
            raise ValueError(
                f"{name} must hold {n_positions} finite positions (one per pattern); got shape {values.shape}."
            )
    probe = np.asarray(probe)
    if probe.ndim == 3:  # a modes axis: ePIE here is single-mode, use the first (SPEC section 5)
        probe = probe[0]
    if probe.shape != (patch_size, patch_size):
        raise ValueError(f"probe has shape {probe.shape}; the patterns need ({patch_size}, {patch_size}).")
    shape = tuple(int(s) for s in canvas_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"canvas_shape={tuple(canvas_shape)!r} must be (rows, cols) with both >= 1.")
    if isinstance(n_iterations, bool) or not isinstance(n_iterations, (int, np.integer)) or n_iterations < 1:
        raise ValueError(f"n_iterations={n_iterations!r} must be a positive integer.")
    return amplitudes, x_px, y_px, probe.astype(np.complex128), shape


def effective_probe(amplitudes, probe, fit_probe_power=True):
    """Return ``(probe * c, c)`` with ``c`` making a unit-modulus object reproduce the mean measured energy (1 when not fitting)."""
    if not fit_probe_power:
        return probe, 1.0
    mean_energy = float(np.mean(np.sum(amplitudes**2, axis=(-2, -1))))
    probe_energy = float(np.sum(np.abs(probe) ** 2))
    if probe_energy <= 0:
        raise ValueError("probe is zero everywhere; ePIE needs an illumination.")
    scale = np.sqrt(mean_energy / probe_energy)
    return probe * scale, float(scale)


def _initial_object(initial_object, shape):
    if initial_object is None:
        return np.ones(shape, dtype=np.complex128)
    initial_object = np.asarray(initial_object, dtype=np.complex128)
    if initial_object.shape != shape:
        raise ValueError(f"initial_object has shape {initial_object.shape} but canvas_shape is {shape}.")
    return initial_object.copy()


def epie_numpy(
    amplitudes,
    x_px,
    y_px,
    probe,
    canvas_shape,
    *,
    n_iterations=50,
    step=1.0,
    alpha=1.0,
    batch_size=16,
    fit_probe_power=True,
    initial_object=None,
    seed=0,
):
    """Reconstruct an object with ePIE, known fixed probe, sub-pixel positions, vectorised in mini-batches.

    Parameters
    ----------
    amplitudes : ndarray of shape (n_positions, N, N)
        Measured diffraction amplitudes (sqrt of counts), DC centred.
    x_px, y_px : ndarray of shape (n_positions,)
        Window centres in object pixels (SPEC section 3); sub-pixel values are used as they are.
    probe : ndarray of shape (N, N) or (modes, N, N), complex
        Probe on the object grid (mode 0 of a modes axis is used).
    canvas_shape : tuple of int
        ``(rows, cols)`` of the object canvas.
    n_iterations : int
        Sweeps over all positions.
    step : float
        ePIE's object step ``beta``.
    alpha : float
        rPIE regularisation in (0, 1]: 1 is ePIE's ``max |P|^2`` normaliser, smaller values move
        towards the local ``|P|^2`` (faster, less stable).
    batch_size : int
        Positions updated together. Each sweep visits the positions in a new random order, in
        mini-batches of this size; 1 is the classical sequential ePIE.
    fit_probe_power : bool
        Rescale the probe so that a unit-modulus object reproduces the mean measured energy.
    initial_object : ndarray of shape (rows, cols), complex, optional
        Default: ones.
    seed : int
        Seed of the visiting order.

    Returns
    -------
    EPIEResult

    Notes
    -----
    For a mini-batch ``B`` with exit waves ``psi_k = P O_k`` (``O_k`` cut bilinearly by
    `ptycholib.forward.extract_patches`) and Fourier-constrained waves ``psi'_k``::

        O <- O + step * sum_k S_k[conj(P) (psi'_k - psi_k)] / ((1 - alpha) W + alpha max(W)),
        W = sum_k S_k[|P|^2]

    with ``S_k`` the bilinear scatter of `ptycholib.reassemble.scatter_add_patches` (the adjoint of the
    cut). With ``batch_size=1`` and ``alpha=1`` this is ePIE (Maiden & Rodenburg 2009); ``alpha < 1``
    is rPIE (Maiden, Johnson & Li 2017).
    """
    amplitudes, x_px, y_px, probe, shape = _check_inputs(amplitudes, x_px, y_px, probe, canvas_shape, n_iterations)
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1].")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    probe, probe_scale = effective_probe(amplitudes, probe, fit_probe_power)
    obj = _initial_object(initial_object, shape)
    patch_size = amplitudes.shape[-1]
    # Work on the unshifted FFT grid with unnormalised transforms: measured |F psi| = N * a.
    target = np.fft.ifftshift(amplitudes, axes=(-2, -1)) * patch_size
    probe_conj = np.conj(probe)
    probe_intensity = np.abs(probe) ** 2
    total_energy = float(np.sum(amplitudes**2))
    rng = np.random.default_rng(seed)
    errors = np.zeros(n_iterations)
    start = time.perf_counter()
    for iteration in range(n_iterations):
        order = rng.permutation(amplitudes.shape[0])
        for first in range(0, order.size, batch_size):
            batch = order[first : first + batch_size]
            x_batch, y_batch = x_px[batch], y_px[batch]
            exit_waves = probe * forward.extract_patches(obj, x_batch, y_batch, patch_size).astype(np.complex128)
            spectra = np.fft.fft2(exit_waves)
            modulus = np.abs(spectra)
            errors[iteration] += float(np.sum((modulus - target[batch]) ** 2))
            corrected = spectra * (target[batch] / np.maximum(modulus, 1e-12))
            updates = probe_conj * (np.fft.ifft2(corrected) - exit_waves)
            numerator = scatter_add_patches(updates, x_batch, y_batch, shape)
            weight = scatter_add_patches(np.broadcast_to(probe_intensity, updates.shape), x_batch, y_batch, shape)
            obj += step * numerator / ((1 - alpha) * weight + alpha * weight.max())
    seconds = time.perf_counter() - start
    errors /= patch_size**2 * max(total_energy, 1e-300)
    return EPIEResult(obj=obj.astype(np.complex64), errors=errors, seconds=seconds, engine="numpy",
                      probe_scale=probe_scale)


def epie_ptylab(amplitudes, x_px, y_px, probe, canvas_shape, *, n_iterations=50, step=1.0, fit_probe_power=True,
                initial_object=None, verbose=False):
    """Reconstruct an object with PtyLab's ePIE engine, known fixed probe (optional dependency).

    Parameters
    ----------
    amplitudes, x_px, y_px, probe, canvas_shape, n_iterations, fit_probe_power, initial_object
        As in `epie_numpy`.
    step : float
        PtyLab's ``betaObject`` (PtyLab's own default is 0.25); ``betaProbe`` is 0, so the probe
        stays fixed.
    verbose : bool
        Let PtyLab print its progress bar and messages (they are swallowed otherwise).

    Returns
    -------
    EPIEResult

    Raises
    ------
    ImportError
        PtyLab is not installed: ``pip install ptylab`` (or the ``ptycholib[ptylab]`` extra).

    Notes
    -----
    **PtyLab rounds every scan position to the nearest whole pixel** (``np.round``, halves to even,
    in ``PtyLab.Reconstruction.calculate_pixel_positions``), so sub-pixel positions are misplaced by
    up to half a pixel; on sub-pixel scans compare with `epie_numpy` too (SPEC section 7).

    The canvas is embedded in PtyLab's square ``No x No`` object with a margin of ``N // 2 + 1``
    pixels (PtyLab cannot cut windows that leave its object) and cut out again afterwards. Positions
    become PtyLab encoder values in metres through an arbitrary but consistent geometry (only the
    object pixel size matters for the Fraunhofer propagator); positions are visited in order
    (``positionOrder = "sequential"``), so runs are reproducible.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import PtyLab
            from PtyLab import Engines
    except ImportError as exc:
        raise ImportError(
            "epie_ptylab needs PtyLab, which is not installed: pip install ptylab "
            "(or the ptycholib[ptylab] extra); epie_numpy needs nothing extra."
        ) from exc
    amplitudes, x_px, y_px, probe, shape = _check_inputs(amplitudes, x_px, y_px, probe, canvas_shape, n_iterations)
    probe, probe_scale = effective_probe(amplitudes, probe, fit_probe_power)
    obj = _initial_object(initial_object, shape)
    patch_size = amplitudes.shape[-1]
    margin = patch_size // 2 + 1
    size = max(shape) + 2 * margin
    size += size % 2
    pixel_m = 1e-6  # object pixel size of the made-up geometry: dxo = wavelength * zo / (N * dxd)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        data = PtyLab.ExperimentalData("test:nodata", "CPM")
        data.ptychogram = (amplitudes**2).astype(np.float32)
        data.wavelength = 1e-9
        data.zo = 0.1
        data.dxd = data.wavelength * data.zo / (patch_size * pixel_m)
        # PtyLab: top-left = round(encoder / dxo) + No // 2 - Np // 2, encoder as (row, col).
        data.encoder = np.stack([y_px + margin - size // 2, x_px + margin - size // 2], axis=1) * pixel_m
        data._setData()
        params = PtyLab.Params()
        params.gpuSwitch = False
        params.positionOrder = "sequential"
        params.propagatorType = "Fraunhofer"
        params.fftshiftSwitch = False
        reconstruction = PtyLab.Reconstruction(data, params)
        reconstruction.No = size
        reconstruction.initializeObjectProbe()
        full = np.ones((size, size), dtype=np.complex64)
        full[margin : margin + shape[0], margin : margin + shape[1]] = obj
        reconstruction.object = full.reshape(1, 1, 1, 1, size, size)
        reconstruction.probe = probe.astype(np.complex64).reshape(1, 1, 1, 1, patch_size, patch_size)
        engine = Engines.ePIE(reconstruction, data, params, PtyLab.DummyMonitor())
        engine.numIterations = int(n_iterations)
        engine.betaObject = float(step)
        engine.betaProbe = 0.0
        start = time.perf_counter()
        engine.reconstruct()
        seconds = time.perf_counter() - start
    result = np.asarray(reconstruction.object).reshape(size, size)
    result = result[margin : margin + shape[0], margin : margin + shape[1]]
    return EPIEResult(
        obj=result.astype(np.complex64),
        errors=np.asarray(reconstruction.error, dtype=np.float64),
        seconds=seconds,
        engine="ptylab",
        probe_scale=probe_scale,
    )


def epie(amplitudes, x_px, y_px, probe, canvas_shape, *, n_iterations=50, engine="numpy", **options):
    """Run ePIE with the known probe on one scan; dispatch to `epie_numpy` or `epie_ptylab`.

    Parameters
    ----------
    amplitudes : ndarray of shape (n_positions, N, N)
        Measured diffraction amplitudes, DC centred (``PtychoData.amplitudes``).
    x_px, y_px : ndarray of shape (n_positions,)
        Window centres in object pixels (``PtychoData.x_px``, ``.y_px``).
    probe : ndarray of shape (N, N), complex
        Probe on the object grid (``PtychoData.probe``).
    canvas_shape : tuple of int
        Object canvas ``(rows, cols)``, e.g. the true object's shape.
    n_iterations : int
    engine : {"numpy", "ptylab"}
        ``"ptylab"`` **rounds positions to whole pixels** (see `epie_ptylab`); ``"numpy"`` keeps them
        sub-pixel.
    **options
        Passed to the engine (``step``, ``fit_probe_power``, ``initial_object``, and for ``"numpy"``
        ``alpha``, ``batch_size``, ``seed``; for ``"ptylab"`` ``verbose``).

    Returns
    -------
    EPIEResult
    """
    if engine == "numpy":
        return epie_numpy(amplitudes, x_px, y_px, probe, canvas_shape, n_iterations=n_iterations, **options)
    if engine == "ptylab":
        return epie_ptylab(amplitudes, x_px, y_px, probe, canvas_shape, n_iterations=n_iterations, **options)
    raise ValueError(f"engine={engine!r} is not supported; allowed values: 'numpy', 'ptylab'.")
