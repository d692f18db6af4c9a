"""Cross-backend parity: SPEC section 8's tolerances and the measurements behind them.

`TOLERANCES` is the one table of targets; the parity tests (``tests/parity/``) assert against it and
notebook 05 reports it. The ``compare_*`` helpers generate their inputs once in NumPy (seeded), run a
stage on a backend (or on both), and return the measured relative differences, so tests and the
notebook measure exactly the same thing. Frameworks are imported only when a helper runs.

Relative error is ``max|a - b| / max|b|`` with ``b`` the reference (the NumPy oracle for the forward
model, the torch backend for network outputs and gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import forward
from .backends import get_backend

__all__ = [
    "TOLERANCES",
    "ParityRow",
    "TrainingParity",
    "compare_forward_model",
    "compare_gradients",
    "compare_network",
    "compare_reassembly",
    "compare_training",
    "config_and_simulator_rows",
    "forward_model_rows",
    "gradient_rows",
    "make_physics_inputs",
    "network_rows",
    "reassembly_rows",
    "relative_error",
    "standard_model_configs",
]

TOLERANCES = {
    "config_roundtrip": 0.0,  # exact round trip through the legacy dict
    "simulator": 0.0,  # bit-identical for a seed (one implementation)
    "forward_model": 1e-5,  # each backend vs ptycholib.forward, identical inputs
    "network": 1e-4,  # torch vs tensorflow, identical canonical weights
    "gradients": 1e-3,  # one training step's gradients, identical weights and batch
    "reassembly": 1e-5,  # identical patches
    "training_psnr_db": 1.0,  # both backends trained from the same initial weights on the same data
    "training_ssim": 0.02,
    "learning_rate_schedule": 1e-6,  # per-epoch learning rates of the two trainings (one arithmetic, ptycholib.schedules)
}
"""SPEC section 8 targets, stage -> tolerance (relative unless the name carries a unit)."""


def relative_error(a, b):
    """Return ``max|a - b| / max|b|`` (``max|a - b|`` when ``b`` is all zeros).

    Parameters
    ----------
    a, b : array_like of the same shape, real or complex
        Measured values and reference values.

    Returns
    -------
    float

    Examples
    --------
    >>> relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.5]))
    0.2
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"relative_error needs equal shapes; got {a.shape} and {b.shape}.")
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a.astype(np.complex128) - b.astype(np.complex128)))) if a.size else 0.0
    return diff / scale if scale > 0 else diff


def make_physics_inputs(model_config, *, batch=2, seed=0):
    """Draw one seeded batch for the physics stages, in NumPy.

    Returns
    -------
    dict
        ``object_patches`` (B, K, N, N) complex64 (K = ``model_config.n_object_channels``) (amplitude in [0.2, 1], phase in [-pi, pi)),
        ``offsets`` (B, C, 2) float64 in [-6, 6) px, ``probe`` (N, N) complex64 (a diffuser probe:
        Gaussian envelope of width N/8 times a random phase, so its far field fills the detector and
        no pixel is dark), ``intensity_scale`` float, ``amplitudes`` (B, C, N, N) float32 (measured: the
        reference prediction times a random factor in [0.8, 1.2]) and ``inputs`` (B, C, N, N)
        float32 normalised amplitudes.
    """
    rng = np.random.default_rng(seed)
    size, channels = model_config.N, model_config.gridsize**2
    shape = (batch, model_config.n_object_channels, size, size)
    object_patches = (rng.uniform(0.2, 1.0, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)
    offsets = rng.uniform(-6.0, 6.0, (batch, channels, 2))
    coords = np.arange(size) - size // 2
    r2 = coords[:, None] ** 2 + coords[None, :] ** 2
    probe = (np.exp(-r2 / (2 * (size / 8) ** 2)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (size, size)))).astype(np.complex64)
    intensity_scale = 37.5
    reference = forward.forward_model(model_config, object_patches, offsets, probe, intensity_scale)
    amplitudes = (reference["amplitudes"] * rng.uniform(0.8, 1.2, reference["amplitudes"].shape)).astype(np.float32)
    energy = np.mean(np.sum(amplitudes.astype(np.float64) ** 2, axis=(-2, -1)))
    inputs = (amplitudes * (size / 2) / np.sqrt(energy)).astype(np.float32)
    return {
        "object_patches": object_patches,
        "offsets": offsets,
        "probe": probe,
        "intensity_scale": intensity_scale,
        "amplitudes": amplitudes,
        "inputs": inputs,
    }


def compare_forward_model(backend, model_config, *, batch=2, seed=0):
    """Run the physics on one backend and on `ptycholib.forward` with identical inputs.

    Parameters
    ----------
    backend : str
        ``"torch"`` or ``"tensorflow"``.
    model_config : ptycholib.config.ModelConfig
        N, gridsize, object_big, pad_object, probe_big, probe_scale, probe_mask, smoothing.
    batch, seed : int
        Size and seed of the NumPy inputs (`make_physics_inputs`).

    Returns
    -------
    dict of str to float
        Relative error per step of ``physics.forward_model`` against `ptycholib.forward.forward_model`:
        ``views`` (group canvas, or the patches themselves), ``exit_wave``, ``amplitudes``
        (``s |F(P_hat O)| / N``), then ``poisson_nll`` and ``amplitude_mae``; compare with
        ``TOLERANCES["forward_model"]``.
    """
    cfg = model_config
    module = get_backend(backend).physics
    data = make_physics_inputs(cfg, batch=batch, seed=seed)
    reference = forward.forward_model(cfg, data["object_patches"], data["offsets"], data["probe"], data["intensity_scale"])
    steps = module.forward_model(
        cfg, module.to_tensor(data["object_patches"]), data["offsets"], module.to_tensor(data["probe"]),
        data["intensity_scale"],
    )
    views, exit_wave, amplitudes = steps["views"], steps["exit_wave"], steps["amplitudes"]
    measured = module.to_tensor(data["amplitudes"])
    nll = float(module.to_numpy(module.poisson_nll(amplitudes, measured)))
    mae = float(module.to_numpy(module.amplitude_mae(amplitudes, measured)))
    return {
        "views": relative_error(module.to_numpy(views), reference["views"]),
        "exit_wave": relative_error(module.to_numpy(exit_wave), reference["exit_wave"]),
        "amplitudes": relative_error(module.to_numpy(amplitudes), reference["amplitudes"]),
        "poisson_nll": relative_error(nll, forward.poisson_nll(reference["amplitudes"], data["amplitudes"])),
        "amplitude_mae": relative_error(mae, forward.amplitude_mae(reference["amplitudes"], data["amplitudes"])),
    }


def _model_pair(model_config, data, seed, source):
    """Build ``source``'s model with ``seed``, copy its canonical weights into the other backend."""
    target = "tensorflow" if source == "torch" else "torch"
    backends = {name: get_backend(name) for name in (source, target)}
    models = {
        source: backends[source].network.build_model(model_config, data["probe"], data["intensity_scale"], seed=seed)
    }
    weights = backends[source].network.get_weights(models[source])
    models[target] = backends[target].network.build_model(model_config, data["probe"], data["intensity_scale"])
    backends[target].network.set_weights(models[target], weights)
    return backends, models, weights


def compare_network(model_config, *, batch=2, seed=0, source="torch"):
    """Copy one backend's initial weights into the other and compare their outputs.

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
    batch, seed : int
        Batch size; seed of the inputs and of the source model's initial weights.
    source : str
        Backend whose weights are copied (``"torch"`` or ``"tensorflow"``); the other is measured
        against it.

    Returns
    -------
    dict of str to float
        Relative errors of ``object`` (`predict_object`), ``views`` and ``amplitudes`` (the two
        outputs of `forward_model`), and ``weights_roundtrip``: the largest difference after the
        weights go source -> other -> back through `get_weights` / `set_weights` (0 when exact).
        Compare with ``TOLERANCES["network"]``.
    """
    data = make_physics_inputs(model_config, batch=batch, seed=seed)
    backends, models, weights = _model_pair(model_config, data, seed, source)
    target = next(name for name in backends if name != source)
    outputs = {}
    for name, backend in backends.items():
        physics, network = backend.physics, backend.network
        obj = network.predict_object(models[name], physics.to_tensor(data["inputs"]))
        views, amplitudes = network.forward_model(
            models[name], physics.to_tensor(data["inputs"]), physics.to_tensor(data["offsets"])
        )
        outputs[name] = {key: physics.to_numpy(value) for key, value in (("object", obj), ("views", views), ("amplitudes", amplitudes))}
    result = {key: relative_error(outputs[target][key], outputs[source][key]) for key in outputs[source]}
    back = backends[target].network.get_weights(models[target])
    backends[source].network.set_weights(models[source], back)
    again = backends[source].network.get_weights(models[source])
    result["weights_roundtrip"] = max(float(np.max(np.abs(again[k] - weights[k]))) if weights[k].size else 0.0 for k in weights)
    return result


def _layer_of(name):
    """``encoder.0.conv1.weight`` -> ``encoder.0.conv1``; physics parameters are their own layer."""
    return name if name.startswith("physics.") else name.rsplit(".", 1)[0]


def compare_gradients(model_config, training_config, *, batch=2, seed=0, physics_weight=0.75, source="torch"):
    """Compare one training step's gradients on both backends (same weights, same batch).

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
    training_config : ptycholib.config.TrainingConfig
        ``nll_weight`` and ``mae_weight`` of the loss.
    batch, seed : int
    physics_weight : float
        The schedule's ``p`` for the step.
    source : str
        Backend whose initial weights both use, and the reference of the comparison.

    Returns
    -------
    dict of str to float
        Relative error per layer (kernel and bias together, e.g. ``encoder.0.conv1``) and for
        ``physics.probe`` (``dL/dRe + i dL/dIm``) and ``physics.log_intensity_scale``, from each
        backend's ``training.loss_gradients``; compare the largest with ``TOLERANCES["gradients"]``.

    Notes
    -----
    The step is chosen well conditioned, so that float32 round-off does not dominate what is
    measured: the probe's far field has no dark pixels (`make_physics_inputs`); the measured
    amplitudes are the source model's own prediction times a factor in [1.1, 1.5], so the NLL and
    MAE gradients do not cancel over the detector; and the biases are drawn from U(-0.5, 0.5) (a
    mid-training point). At the zero-bias start the phase is nearly uniform, and since
    ``|F(P O e^{i phi})|`` does not depend on a global phase ``phi`` the phase head's gradient is
    then close to 0 and its relative error is round-off over round-off. Errors are per layer
    (kernel and bias together). Measured this way both backends stay within about 1e-5 of a
    float64 computation (checked with torch in float64 during development).
    """
    data = make_physics_inputs(model_config, batch=batch, seed=seed)
    backends, models, weights = _model_pair(model_config, data, seed, source)
    rng = np.random.default_rng(seed + 2)
    weights = {
        key: rng.uniform(-0.5, 0.5, value.shape).astype(np.float32) if key.endswith(".bias") else value
        for key, value in weights.items()
    }
    for name, backend in backends.items():
        backend.network.set_weights(models[name], weights)
    physics, network = backends[source].physics, backends[source].network
    _, predicted = network.forward_model(models[source], physics.to_tensor(data["inputs"]), physics.to_tensor(data["offsets"]))
    factor = np.random.default_rng(seed + 1).uniform(1.1, 1.5, data["amplitudes"].shape)
    amplitudes = (physics.to_numpy(predicted) * factor).astype(np.float32)
    target_patches = data["object_patches"] if model_config.model_type == "supervised" else None
    grads = {}
    for name, backend in backends.items():
        if not hasattr(backend.training, "loss_gradients"):
            raise NotImplementedError(
                f"ptycholib.{name}.training has no loss_gradients(model, inputs, offsets, amplitudes, "
                "training_config, *, physics_weight=1.0, target_patches=None); the gradient parity needs it."
            )
        grads[name] = backend.training.loss_gradients(
            models[name], data["inputs"], data["offsets"], amplitudes, training_config,
            physics_weight=physics_weight, target_patches=target_patches,
        )
    target = next(name for name in backends if name != source)
    mismatched = sorted(set(grads[source]) ^ set(grads[target]))
    if mismatched:
        raise ValueError(f"the backends' gradients have different keys: {mismatched}.")
    errors = {}
    for layer in sorted({_layer_of(key) for key in grads[source]}):
        keys = [key for key in sorted(grads[source]) if _layer_of(key) == layer]
        measured = np.concatenate([np.ravel(grads[target][key]) for key in keys])
        reference = np.concatenate([np.ravel(grads[source][key]) for key in keys])
        errors[layer] = relative_error(measured, reference)
    return errors


def compare_reassembly(backend, *, weighting="crop", seed=0, n_positions=200, patch_size=64):
    """Reassemble identical random patches with one backend and with `ptycholib.reassemble` (NumPy).

    Returns
    -------
    dict of str to float
        Relative errors of the object canvas (``obj``) and of the accumulated weights (``weights``);
        compare with ``TOLERANCES["reassembly"]``.
    """
    from . import reassemble

    modules = get_backend(backend)
    to_numpy = modules.physics.to_numpy
    rng = np.random.default_rng(seed)
    shape = (n_positions, patch_size, patch_size)
    patches = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    x_px = rng.uniform(40, 160, n_positions)
    y_px = rng.uniform(40, 120, n_positions)
    probe = np.exp(-((np.arange(patch_size) - patch_size // 2) ** 2) / 200.0)[:, None] * np.ones(patch_size)
    options = {"weighting": weighting, "probe": probe}
    obj, weights = reassemble.reassemble_patches(patches, x_px, y_px, (200, 200), **options)
    obj_b, weights_b = modules.reassemble.reassemble_patches(patches, x_px, y_px, (200, 200), **options)
    return {"obj": relative_error(to_numpy(obj_b), obj), "weights": relative_error(to_numpy(weights_b), weights)}


@dataclass(frozen=True)
class ParityRow:
    """One measured stage of the parity table (notebook 05, the report)."""

    stage: str
    detail: str
    measured: float
    target: float

    @property
    def passed(self):
        return bool(np.isfinite(self.measured) and self.measured <= self.target)

    def as_dict(self):
        return {"stage": self.stage, "detail": self.detail, "measured": self.measured, "target": self.target,
                "passed": self.passed}


def standard_model_configs(*, smoke=False):
    """Model configurations the parity study covers: N 64 and 128, gridsize 1 and 2, pad_object/probe_big on and
    off, and at gridsize 2 both meanings of object_big (C merged patches, or one object per group)."""
    from .config import ModelConfig

    configs = [
        ModelConfig(N=64, gridsize=2, n_filters_scale=1),
        ModelConfig(N=64, gridsize=2, n_filters_scale=1, object_big=False),
        ModelConfig(N=64, gridsize=1, n_filters_scale=1),
    ]
    if not smoke:
        configs += [
            ModelConfig(N=64, gridsize=2, n_filters_scale=1, pad_object=False),
            ModelConfig(N=64, gridsize=2, n_filters_scale=1, probe_big=False),
            ModelConfig(N=128, gridsize=2, n_filters_scale=1),
        ]
    return configs


def _describe(model_config):
    flags = [name for name in ("pad_object", "probe_big") if getattr(model_config, name)]
    if model_config.gridsize > 1 and not model_config.object_big:
        flags.append("one object per group")
    return f"N={model_config.N}, gridsize {model_config.gridsize}, {' + '.join(flags) or 'plain'}"


def config_and_simulator_rows(*, seed=0):
    """Config -> legacy dict -> config (exact) and the simulator run twice with one seed (bit-identical)."""
    from . import simulate
    from .config import Config, apply_overrides
    from .interop import config_drift, from_legacy_dict, to_legacy_dict

    cfg = apply_overrides(Config(), {"gridsize": 2, "backend": "tensorflow", "stages": [{"epochs": 50}]})
    back, _ = from_legacy_dict(to_legacy_dict(cfg))
    runs = [simulate.simulate_train_test(n_train=16, n_test=4, step_px=4, seed=seed)[0] for _ in range(2)]
    return [
        ParityRow("config", "Config -> legacy dict -> Config: fields that differ", float(len(config_drift(cfg, back))),
                  TOLERANCES["config_roundtrip"]),
        ParityRow("simulator", "same seed twice: max |difference| of the amplitudes",
                  float(np.max(np.abs(runs[0].amplitudes - runs[1].amplitudes))), TOLERANCES["simulator"]),
    ]


def forward_model_rows(model_configs, *, seed=0):
    """`compare_forward_model` for every backend and configuration (worst step per run)."""
    from .backends import BACKENDS, is_available

    return [
        ParityRow("forward model", f"{backend} vs NumPy, {_describe(cfg)}",
                  max(compare_forward_model(backend, cfg, seed=seed).values()), TOLERANCES["forward_model"])
        for cfg in model_configs for backend in BACKENDS if is_available(backend)
    ]


def network_rows(model_configs, *, seed=0):
    """`compare_network` (torch weights in tensorflow) per configuration."""
    return [
        ParityRow("network", f"tensorflow vs torch, shared weights, {_describe(cfg)}",
                  max(v for k, v in compare_network(cfg, seed=seed).items() if k != "weights_roundtrip"),
                  TOLERANCES["network"])
        for cfg in model_configs
    ]


def gradient_rows(model_configs, *, seed=0):
    """`compare_gradients` of one training step per configuration (worst layer)."""
    from .config import TrainingConfig

    training = TrainingConfig(nll_weight=1.0, mae_weight=0.5)
    return [
        ParityRow("gradients", f"one step, worst layer, {_describe(cfg)}",
                  max(compare_gradients(cfg, training, seed=seed).values()), TOLERANCES["gradients"])
        for cfg in model_configs
    ]


def reassembly_rows(*, seed=0):
    """Each backend's reassembly vs the NumPy reference on identical random patches (`compare_reassembly`)."""
    from .backends import BACKENDS, is_available

    return [
        ParityRow("reassembly", f"{backend} vs NumPy, {weighting} weights",
                  compare_reassembly(backend, weighting=weighting, seed=seed)["obj"], TOLERANCES["reassembly"])
        for backend in BACKENDS if is_available(backend)
        for weighting in ("crop", "probe")
    ]


@dataclass
class TrainingParity:
    """Both backends trained on the same data from the same start (`compare_training`)."""

    histories: dict
    reconstructions: dict
    scores: dict
    rows: list
    summary: dict
    region: np.ndarray

    def difference_maps(self, test_data):
        """Arguments for `plotting.difference_maps`: torch minus tensorflow, amplitude and phase."""
        from . import metrics

        aligned = {name: metrics.remove_global_factor(obj, test_data.obj, self.region)
                   for name, obj in self.reconstructions.items()}
        torch_obj, tf_obj = aligned["torch"], aligned["tensorflow"]
        images = [np.where(self.region, np.abs(torch_obj) - np.abs(tf_obj), np.nan),
                  np.where(self.region, np.angle(torch_obj * np.conj(tf_obj)), np.nan)]
        return images, ["|torch| - |tensorflow|", "phase(torch) - phase(tensorflow) (rad)"]


def compare_training(train_data, test_data, config, *, source="torch"):
    """Train both backends on the same data from the same initial weights and batch order; score both.

    The source backend's seeded initial weights are copied into the other (canonical layout); the
    batch order and validation split come from `ptycholib.batching` in both. Returns a
    `TrainingParity` whose rows hold the PSNR and SSIM differences of the two reconstructions
    (SPEC 8: within 1 dB and 0.02).
    """
    from . import forward, workflow
    from .config import apply_overrides

    backend = get_backend(source)
    probe_scale = config.model.probe_scale
    start = backend.network.build_model(config.model, train_data.probe,
                                        forward.initial_intensity_scale(train_data.amplitudes, train_data.probe, probe_scale),
                                        seed=config.training.seed)
    initial = backend.network.get_weights(start)
    histories, reconstructions, scores = {}, {}, {}
    for name in ("torch", "tensorflow"):
        cfg = apply_overrides(config, {"backend": name})
        trained = workflow.train_model(train_data, cfg, initial_weights=initial, progress=False)
        recon = workflow.reconstruct(trained, test_data)
        histories[name] = trained.history
        reconstructions[name] = recon.obj
        scores[name] = dict(workflow.evaluate(recon, test_data), train_seconds=trained.seconds)
        region = recon.region
    psnr_gap = abs(scores["torch"]["amplitude_psnr"] - scores["tensorflow"]["amplitude_psnr"])
    ssim_gap = abs(scores["torch"]["amplitude_ssim"] - scores["tensorflow"]["amplitude_ssim"])
    loss_gap = max(relative_error(a["loss"], b["loss"]) for a, b in zip(histories["tensorflow"], histories["torch"]))
    rows = [
        ParityRow("trained models", "|amplitude PSNR(torch) - PSNR(tensorflow)| (dB)", psnr_gap, TOLERANCES["training_psnr_db"]),
        ParityRow("trained models", "|amplitude SSIM(torch) - SSIM(tensorflow)|", ssim_gap, TOLERANCES["training_ssim"]),
        ParityRow("trained models", f"per-epoch learning rate ({config.training.lr_schedule} schedule), max relative gap",
                  relative_error(np.array([h["learning_rate"] for h in histories["tensorflow"]]),
                                 np.array([h["learning_rate"] for h in histories["torch"]])),
                  TOLERANCES["learning_rate_schedule"]),
    ]
    summary = {
        "loss_max_relative_gap": loss_gap,
        **{f"{name}_{key}": scores[name][key] for name in scores for key in ("amplitude_ssim", "amplitude_psnr", "phase_rmse", "train_seconds")},
    }
    return TrainingParity(histories, reconstructions, scores, rows, summary, region)
