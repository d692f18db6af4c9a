"""Physics refinement: from the network's answer to the data's, by gradient descent on the object.

A trained network answers in one pass, but only approximately; `refine` starts from its answer (or
from any object, or a flat one) and minimises the misfit between the measured diffraction and the
same far-field model the network was trained through, directly over the object canvas (and,
optionally, the probe), in mini-batches of positions. The backends do the arithmetic
(``ptycholib.torch.refine`` / ``ptycholib.tensorflow.refine``, autodiff through the forward model);
this module plans the visiting order and the bilinear cut in NumPy, so both backends follow the same
steps, and holds the NumPy reference of the loss.

Mathematics. For a batch ``B`` of positions with views ``O_k = cut_k(O)`` (bilinear, sub-pixel,
`ptycholib.forward.extract_patches`), exit waves ``psi_k = P O_k`` and predicted amplitudes
``a_hat_k = |F psi_k| / N``, the loss is

- ``"amplitude"``: ``1/2 sum (a_hat - a)^2`` (Gaussian noise on amplitudes; ePIE's misfit), or
- ``"poisson"``: ``1/4 sum (a_hat^2 - a^2 log(a_hat^2 + eps))`` (the PINN's objective; the factor
  makes its gradient equal the amplitude loss's near the fit, so the same step sizes apply).

With ``g = dL/dRe(O) + i dL/dIm(O)`` (autodiff on the real and imaginary parts), the step rules are

- ``"pie"``: ``O <- O - step * g / ((1 - alpha) W + alpha max W)``, ``W = sum_k cut_k^T |P|^2``. For the
  amplitude loss ``g = sum_k cut_k^T[conj(P) (psi_k - psi'_k)]`` with ``psi'`` the Fourier-constrained
  wave, so ``alpha = 1``, ``step = 1`` is exactly the mini-batch ePIE of `ptycholib.baseline.epie_numpy`
  (and ``alpha < 1`` rPIE); the probe, when trained, takes the same step with ``sum_k |O_k|^2``;
- ``"adam"``: Adam (``betas = (0.9, 0.999)``, ``eps = 1e-8``) on the real and imaginary parts, written
  out in both backends so that they do the same arithmetic.

Choices (README, "Decisions where the issues were silent"): positions are visited in a new random order every sweep, drawn from
``numpy.random.default_rng(seed)`` exactly as `ptycholib.baseline.epie_numpy` draws them; the probe
is rescaled to the data's mean energy (``fit_probe_power``) as ePIE does, and a network start is
rescaled by the least-squares factor that best fits the measured amplitudes, since the network's
object is only defined up to the intensity scale it learnt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "OPTIMIZERS",
    "LOSSES",
    "RefineOptions",
    "Batch",
    "RefinementPlan",
    "bilinear_plan",
    "batch_loss",
    "fit_object_scale",
    "start_from_reconstruction",
    "network_start",
    "Refinement",
    "refine",
    "compare_starts",
]

OPTIMIZERS = ("pie", "adam")
LOSSES = ("amplitude", "poisson")
POISSON_EPS = 1e-2  # counts; 1e-8 made the curvature a^2/a_hat^2 chaotic where a_hat << a (measured in float64)
_DEFAULT_STEP = {"pie": 1.0, "adam": 0.02}


@dataclass(frozen=True)
class RefineOptions:
    """How `refine` steps.

    Attributes
    ----------
    optimizer : {"pie", "adam"}
        Step rule (module docstring); ``"pie"`` with the amplitude loss is ePIE/rPIE.
    loss : {"amplitude", "poisson"}
    step : float or None
        Object step; default 1 for ``"pie"`` (ePIE's ``beta``), 0.02 for ``"adam"`` (learning rate,
        in object-modulus units per step).
    alpha : float
        rPIE's regulariser in (0, 1] (``"pie"`` only): 1 is ePIE's ``max W`` normaliser.
    batch_size : int
        Positions per update.
    probe_trainable : bool
        Refine the probe too.
    probe_step : float
        Probe step (``"pie"``); with ``"adam"`` the probe shares ``step``.
    seed : int
        Seed of the visiting order.
    fit_probe_power : bool
        Rescale the probe so that a unit-modulus object reproduces the data's mean energy.
    rescale_start : bool
        Multiply a network or given start by `fit_object_scale`'s least-squares factor.
    """

    optimizer: str = "pie"
    loss: str = "amplitude"
    step: float | None = None
    alpha: float = 1.0
    batch_size: int = 16
    probe_trainable: bool = False
    probe_step: float = 1.0
    seed: int = 0
    fit_probe_power: bool = True
    rescale_start: bool = False

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not supported; allowed values: 'pie', 'adam'.")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not supported; allowed values: 'amplitude', 'poisson'.")
        step = _DEFAULT_STEP[self.optimizer] if self.step is None else self.step
        if isinstance(step, bool) or not np.isfinite(step) or step <= 0:
            raise ValueError(f"step={self.step!r} must be a finite number > 0.")
        object.__setattr__(self, "step", float(step))
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha={self.alpha!r} must be in (0, 1].")
        if not np.isfinite(self.probe_step) or self.probe_step <= 0:
            raise ValueError(f"probe_step={self.probe_step!r} must be a finite number > 0.")
        for name in ("batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (1 if name == "batch_size" else 0):
                raise ValueError(f"{name}={value!r} must be an integer >= {1 if name == 'batch_size' else 0}.")


@dataclass(frozen=True)
class Batch:
    """One update's positions and their bilinear cut.

    Attributes
    ----------
    positions : ndarray of shape (B,), int64
    index : ndarray of shape (B, 4, N, N), int64
        Flat canvas index of each view pixel's four bilinear corners (clipped into the canvas).
    weight : ndarray of shape (B, 4, N, N), float32
        Their bilinear weights, 0 for corners off the canvas.
    """

    positions: np.ndarray
    index: np.ndarray
    weight: np.ndarray


def bilinear_plan(x_px, y_px, patch_size, canvas_shape):
    """Return the flat indices and weights of the bilinear cut of `ptycholib.forward.extract_patches`.

    Parameters
    ----------
    x_px, y_px : ndarray of shape (B,)
        Window centres in object pixels.
    patch_size : int
    canvas_shape : tuple of int

    Returns
    -------
    index : ndarray of shape (B, 4, N, N), int64
    weight : ndarray of shape (B, 4, N, N), float32
        ``view[b] = sum_j weight[b, j] * canvas.ravel()[index[b, j]]``.

    Examples
    --------
    >>> index, weight = bilinear_plan(np.array([1.5]), np.array([1.0]), 2, (3, 4))
    >>> canvas = np.arange(12.0)
    >>> (weight * canvas[index]).sum(axis=1)[0].tolist()
    [[0.5, 1.5], [4.5, 5.5]]
    """
    rows, cols = canvas_shape
    x_px = np.asarray(x_px, dtype=np.float64)
    y_px = np.asarray(y_px, dtype=np.float64)
    x0, y0 = np.floor(x_px), np.floor(y_px)
    fx, fy = x_px - x0, y_px - y0
    offsets = np.arange(patch_size) - patch_size // 2
    r0 = y0.astype(np.int64)[:, None] + offsets
    c0 = x0.astype(np.int64)[:, None] + offsets
    index, weight = [], []
    for dr, dc, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        r, c = r0 + dr, c0 + dc
        valid = ((r >= 0) & (r < rows))[:, :, None] & ((c >= 0) & (c < cols))[:, None, :]
        index.append(np.clip(r, 0, rows - 1)[:, :, None] * cols + np.clip(c, 0, cols - 1)[:, None, :])
        weight.append(w[:, None, None] * valid)
    return np.stack(index, axis=1), np.stack(weight, axis=1).astype(np.float32)


@dataclass(frozen=True)
class RefinementPlan:
    """The visiting order of every sweep and the cut of every batch, shared by both backends.

    Attributes
    ----------
    x_px, y_px : ndarray of shape (M,)
    patch_size : int
    canvas_shape : tuple of int
    n_iterations, batch_size, seed : int
        Sweep ``i`` visits ``orders[i]``, the ``i``-th ``default_rng(seed).permutation(M)``.
    """

    x_px: np.ndarray
    y_px: np.ndarray
    patch_size: int
    canvas_shape: tuple
    n_iterations: int
    batch_size: int
    seed: int
    orders: list = field(init=False, repr=False)

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        object.__setattr__(self, "orders", [rng.permutation(self.x_px.size) for _ in range(self.n_iterations)])

    def batches(self, iteration):
        """Yield the `Batch` es of sweep ``iteration`` in order."""
        order = self.orders[iteration]
        for first in range(0, order.size, self.batch_size):
            positions = order[first : first + self.batch_size]
            index, weight = bilinear_plan(self.x_px[positions], self.y_px[positions], self.patch_size,
                                          self.canvas_shape)
            yield Batch(positions=positions, index=index, weight=weight)


def batch_loss(obj, probe, amplitudes, x_px, y_px, loss="amplitude"):
    """NumPy reference of the refinement loss of a set of positions (module docstring).

    Parameters
    ----------
    obj : ndarray of shape (rows, cols), complex
    probe : ndarray of shape (N, N), complex
    amplitudes : ndarray of shape (M, N, N)
        Measured amplitudes, DC centred.
    x_px, y_px : ndarray of shape (M,)
    loss : {"amplitude", "poisson"}

    Returns
    -------
    float
    """
    from ptycholib import forward

    patch_size = amplitudes.shape[-1]
    exit_waves = probe * forward.extract_patches(obj, x_px, y_px, patch_size)
    predicted = np.abs(np.fft.fftshift(np.fft.fft2(exit_waves), axes=(-2, -1))) / patch_size
    if loss == "amplitude":
        return float(0.5 * np.sum((predicted - amplitudes) ** 2))
    return float(0.25 * np.sum(predicted**2 - amplitudes**2 * np.log(predicted**2 + POISSON_EPS)))


def fit_object_scale(obj, probe, amplitudes, x_px, y_px):
    """Return the real factor ``c`` minimising ``sum (c |F(P cut(O))| / N - a)^2`` (least squares)."""
    from ptycholib import forward

    patch_size = amplitudes.shape[-1]
    predicted = np.abs(np.fft.fft2(probe * forward.extract_patches(obj, x_px, y_px, patch_size))) / patch_size
    measured = np.fft.ifftshift(amplitudes, axes=(-2, -1))
    energy = float(np.sum(predicted**2))
    if energy <= 0:
        raise ValueError("the starting object is zero under every probe position; nothing to rescale.")
    return float(np.sum(predicted * measured)) / energy


def start_from_reconstruction(reconstruction, canvas_shape):
    """Turn a network's `ptycholib.workflow.Reconstruction` into a refinement start.

    Parameters
    ----------
    reconstruction : ptycholib.workflow.Reconstruction
    canvas_shape : tuple of int
        The canvas of the refinement; the network's canvas is cropped or padded to it.

    Returns
    -------
    ndarray of shape canvas_shape, complex64
        The network's object where it reconstructed one, 1 elsewhere (the flat start).
    """
    obj = np.ones(canvas_shape, dtype=np.complex64)
    rows = min(canvas_shape[0], reconstruction.obj.shape[0])
    cols = min(canvas_shape[1], reconstruction.obj.shape[1])
    reached = reconstruction.weights[:rows, :cols] > 0
    obj[:rows, :cols][reached] = reconstruction.obj[:rows, :cols][reached]
    return obj


def network_start(model, data, canvas_shape, *, backend=None):
    """Reconstruct with a trained model and turn the result into a refinement start.

    Parameters
    ----------
    model : TrainedModel, ModelArchive or path
    data : ptycholib.data.PtychoData
    canvas_shape : tuple of int
    backend : str, optional

    Returns
    -------
    obj : ndarray of shape canvas_shape, complex64
        See `start_from_reconstruction`.
    seconds : float
        Inference, reassembly and the canvas preparation (model construction excluded).
    """
    from ptycholib import workflow

    reconstruction = workflow.reconstruct(model, data, backend=backend)
    begin = time.perf_counter()
    obj = start_from_reconstruction(reconstruction, canvas_shape)
    return obj, reconstruction.total_seconds + time.perf_counter() - begin


@dataclass(frozen=True)
class Refinement:
    """Output of `refine`.

    Attributes
    ----------
    obj : ndarray of shape (rows, cols), complex64
    probe : ndarray of shape (N, N), complex64
        The effective probe at the end (rescaled; refined when ``probe_trainable``).
    losses : ndarray of shape (n_iterations,), float64
        Loss summed over each sweep, before that sweep's updates.
    seconds : float
        The iterations alone.
    start_seconds : float
        Preparing the start: the network's inference and reassembly (0 for a given or flat start)
        plus the start's rescaling.
    snapshots : dict of int to (ndarray, float)
        For every iteration count asked for in ``snapshots``: the object after that many sweeps and
        the seconds spent until then, the start included (copying excluded).
    start : str
        ``"network"``, ``"given"`` or ``"flat"``.
    backend : str
    options : RefineOptions
    """

    obj: np.ndarray
    probe: np.ndarray
    losses: np.ndarray
    seconds: float
    start_seconds: float
    snapshots: dict
    start: str
    backend: str
    options: RefineOptions

    @property
    def total_seconds(self):
        """Start and iterations together."""
        return self.start_seconds + self.seconds


def _effective_probe(amplitudes, probe, fit_probe_power):
    from ptycholib.baseline import effective_probe

    probe = np.asarray(probe)
    if probe.ndim == 3:
        probe = probe[0]
    return effective_probe(amplitudes, probe, fit_probe_power)[0].astype(np.complex64)


def refine(model, data, initial_object=None, n_iterations=10, *, backend="torch", canvas_shape=None, snapshots=(),
           progress=False, **options):
    """Refine an object through the physics, from a network's answer, a given object or a flat start.

    Parameters
    ----------
    model : TrainedModel, ModelArchive, path or None
        With a model and no ``initial_object``, the start is the model's reconstruction
        (`network_start`, inference time counted); with neither, the start is flat (ones).
    data : ptycholib.data.PtychoData
        The scan: amplitudes, positions and the probe (the data's probe is used).
    initial_object : ndarray of shape (rows, cols), complex, optional
    n_iterations : int
        Sweeps over all positions (>= 1).
    backend : {"torch", "tensorflow"}
    canvas_shape : tuple of int, optional
        Default: the true object's shape when the data has one, else `workflow.canvas_shape_for`.
    snapshots : iterable of int
        Iteration counts at which to keep a copy of the object and the time spent.
    progress : bool
        Show a progress bar over the sweeps.
    **options
        `RefineOptions` fields: ``optimizer``, ``loss``, ``step``, ``alpha``, ``batch_size``,
        ``probe_trainable``, ``probe_step``, ``seed``, ``fit_probe_power``.

    Returns
    -------
    Refinement

    Notes
    -----
    Notebook 04 (section 5) compares the network's start with a flat one and with ePIE against time;
    ``ptycholib reconstruct --refine K`` runs it from the shell.
    """
    from ptycholib import backends, workflow

    options = RefineOptions(**options)
    if isinstance(n_iterations, bool) or not isinstance(n_iterations, (int, np.integer)) or n_iterations < 1:
        raise ValueError(f"n_iterations={n_iterations!r} must be a positive integer.")
    if backend not in backends.BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; allowed values: 'torch', 'tensorflow'.")
    if canvas_shape is None:
        canvas_shape = data.obj.shape if data.obj is not None else workflow.canvas_shape_for(data)
    canvas_shape = tuple(int(s) for s in canvas_shape)
    snapshots = sorted({int(s) for s in snapshots})
    if any(s < 0 or s > n_iterations for s in snapshots):
        raise ValueError(f"snapshots={snapshots!r} must lie in 0..n_iterations={n_iterations}.")
    engine = backends.get_backend(backend).refine
    amplitudes = np.asarray(data.amplitudes, dtype=np.float32)
    probe = _effective_probe(amplitudes, data.probe, options.fit_probe_power)
    start_seconds = 0.0
    if initial_object is not None:
        start, obj = "given", np.asarray(initial_object, dtype=np.complex64)
        if obj.shape != canvas_shape:
            raise ValueError(f"initial_object has shape {obj.shape} but the canvas is {canvas_shape}.")
    elif model is not None:
        start, (obj, start_seconds) = "network", network_start(model, data, canvas_shape)
    else:
        start, obj = "flat", np.ones(canvas_shape, dtype=np.complex64)
    if start != "flat" and options.rescale_start:
        begin = time.perf_counter()
        obj = (obj * fit_object_scale(obj, probe, amplitudes, data.x_px, data.y_px)).astype(np.complex64)
        start_seconds += time.perf_counter() - begin
    plan = RefinementPlan(x_px=np.asarray(data.x_px, dtype=np.float64), y_px=np.asarray(data.y_px, dtype=np.float64),
                          patch_size=amplitudes.shape[-1], canvas_shape=canvas_shape, n_iterations=int(n_iterations),
                          batch_size=options.batch_size, seed=options.seed)
    shifted = np.fft.ifftshift(amplitudes, axes=(-2, -1))
    kept = {0: (obj.copy(), start_seconds)} if 0 in snapshots else {}
    clock = {"begin": time.perf_counter(), "paused": 0.0}
    bar = _progress_bar(n_iterations) if progress else None

    def on_iteration(iteration, loss, get_object):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
        if iteration + 1 in snapshots:
            pause = time.perf_counter()
            elapsed = pause - clock["begin"] - clock["paused"]
            kept[iteration + 1] = (get_object(), start_seconds + elapsed)
            clock["paused"] += time.perf_counter() - pause

    refined, refined_probe, losses = engine.refine_object(shifted, probe, obj, plan, options, on_iteration=on_iteration)
    seconds = time.perf_counter() - clock["begin"] - clock["paused"]
    if bar is not None:
        bar.close()
    return Refinement(obj=refined, probe=refined_probe, losses=losses, seconds=seconds, start_seconds=start_seconds,
                      snapshots=kept, start=start, backend=backend, options=options)


def _progress_bar(total):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="refine", unit="sweep")


def compare_starts(model, data, iterations, *, reconstruction=None, epie_iterations=30, mask=None, backend="torch",
                   **options):
    """Score the network alone, network + refinement, flat start + refinement and ePIE against time.

    Everything runs in this process with the current threads, so the seconds are comparable; each
    refinement is one run whose intermediate objects are kept at the asked iteration counts
    (``snapshots``), and ePIE runs in consecutive chunks chained through ``initial_object`` (one new
    visiting order per chunk), so its curve costs one run.

    Parameters
    ----------
    model : TrainedModel, ModelArchive or path
    data : ptycholib.data.PtychoData
        A scan with its true object.
    iterations : sequence of int
        Sweep counts at which the refinements are scored.
    reconstruction : ptycholib.workflow.Reconstruction, optional
        The model's reconstruction of ``data`` when already made (its ``total_seconds`` count as the
        network's time); default: reconstruct here.
    epie_iterations : int
        ePIE sweeps (`ptycholib.baseline.epie_numpy`); scored at every count of ``iterations`` below
        it and at ``epie_iterations``; 0 leaves ePIE out (e.g. when the caller has run it already).
    mask : ndarray of bool, optional
        Region to score (`ptycholib.workflow.evaluate`); default the scanned region with a 20 px window.
    backend : str
    **options
        `RefineOptions` fields for both refinements.

    Returns
    -------
    list of dict
        One row per (method, iterations): ``method``, ``iterations``, ``seconds`` (start included),
        ``amplitude_ssim``, ``phase_rmse``.
    """
    from ptycholib import baseline, metrics, workflow

    canvas_shape = data.obj.shape
    if mask is None:
        mask = metrics.scanned_region_mask(data.x_px, data.y_px, canvas_shape, 20)
    iterations = sorted({int(i) for i in iterations})
    rows = []

    def score(method, count, seconds, obj):
        scores = workflow.evaluate(obj, data, mask=mask)
        rows.append({"method": method, "iterations": count, "seconds": float(seconds),
                     "amplitude_ssim": float(scores["amplitude_ssim"]), "phase_rmse": float(scores["phase_rmse"])})

    if reconstruction is None:
        start, start_seconds = network_start(model, data, canvas_shape, backend=backend)
    else:
        begin = time.perf_counter()
        start = start_from_reconstruction(reconstruction, canvas_shape)
        start_seconds = reconstruction.total_seconds + time.perf_counter() - begin
    score("network", 0, start_seconds, start)
    for method, initial in (("network + refine", start), ("flat + refine", None)):
        result = refine(None, data, initial_object=initial, n_iterations=iterations[-1], backend=backend,
                        snapshots=iterations, **options)
        offset = start_seconds if initial is not None else 0.0
        for count, (obj, seconds) in sorted(result.snapshots.items()):
            score(method, count, seconds + offset, obj)
    done, elapsed, obj = 0, 0.0, None
    for count in ([i for i in iterations if i < epie_iterations] + [epie_iterations]) if epie_iterations else []:
        run = baseline.epie_numpy(data.amplitudes, data.x_px, data.y_px, data.probe, canvas_shape,
                                  n_iterations=count - done, initial_object=obj, seed=done)
        done, elapsed, obj = count, elapsed + run.seconds, run.obj
        score("ePIE", count, elapsed, obj)
    return rows
