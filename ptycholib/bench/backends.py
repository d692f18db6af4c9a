"""Benchmarks "backends" and "training": physics, network and training speed of each backend.

Every figure comes from a function that takes a backend module (``ptycholib.torch`` or
``ptycholib.tensorflow``) and calls only the public names both backends share, so the two backends
are measured by the same code. A backend whose framework is missing contributes no rows.

- "backends": forward-model patterns/s as a fraction of the backend's bare batched FFT rate (the
  physics of SPEC 4.4-4.5 on network-sized batches: group canvas, probe, FFT, modulus); network
  forward+backward patterns/s; and the physics overhead ratio: one full physics-informed loss
  gradient (network + canvas + probe + FFT + Poisson NLL) over one bare network gradient (the
  supervised MAE loss of the same network), both through ``training.loss_gradients`` (target <= 1.2).
- "inference": what each inference fast path buys (SPEC 10 shapes, untrained weights, one process):
  patterns/s of variants measured in interleaved rounds (best of each) — torch: an eager pass under
  ``no_grad`` at 256 groups per call (the old path), ``inference_mode``, channels-first weights,
  batch sizes, the automatic batch size, bfloat16; tensorflow: an eager Keras call, the compiled
  ``tf.function``, XLA (``jit_compile``), batch sizes, bfloat16 — and the best float32 variant over
  PtychoPINN's SPEC 10 figure.
- "training": training groups/s of ``training.train`` at gridsize 2, n_filters_scale 2, N = 64,
  batch 16 (SPEC section 10: PtychoPINN TF trained 38 groups/s at batch 8; target >= 1.5x = 57), and
  the torch / tensorflow ratio. Timed between the ends of the first and last epochs, so framework
  start-up and tracing are excluded.
"""

from __future__ import annotations

import importlib
import math
import time

import numpy as np

from ptycholib import forward
from ptycholib.backends import BACKENDS, is_available
from ptycholib.bench import Row, best_time, register
from ptycholib.config import ModelConfig, TrainingConfig

__all__ = ["backends_benchmark", "training_benchmark", "inference_benchmark", "physics_rows", "training_rows",
           "inference_rows"]

_N = 64
_PTYCHOPINN_GROUPS_PER_S = 38.0  # SPEC section 10, gridsize 2, n_filters_scale 2
_TRAINING_TARGET = 1.5 * _PTYCHOPINN_GROUPS_PER_S


def _backend_modules():
    """Importable backend packages, by name."""
    modules = {}
    for name in BACKENDS:
        if not is_available(name):
            continue
        try:
            modules[name] = importlib.import_module(f"ptycholib.{name}")
        except ImportError:
            continue
    return modules


def _probe():
    coords = np.arange(_N) - _N // 2
    return np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 9.0**2)).astype(np.complex64)


def _groups(n_groups, gridsize=2, seed=0):
    """Noiseless groups of a random object at 1e6 photons per pattern: inputs, offsets, amplitudes, patches."""
    rng = np.random.default_rng(seed)
    channels = gridsize**2
    side = 400
    obj = ((0.5 + 0.5 * rng.random((side, side))) * np.exp(1j * rng.uniform(-1, 1, (side, side)))).astype(np.complex64)
    offsets = rng.uniform(-4, 4, size=(n_groups, channels, 2))
    offsets -= offsets.mean(axis=1, keepdims=True)
    positions = rng.uniform(_N, side - _N, size=(n_groups, 1, 2)) + offsets
    patches = forward.extract_patches(obj, positions[..., 0].ravel(), positions[..., 1].ravel(), _N)
    patches = patches.reshape(n_groups, channels, _N, _N).astype(np.complex64)
    amplitudes = forward.far_field_amplitude(forward.illuminate(patches, _probe(), probe_scale=4.0))
    amplitudes *= math.sqrt(1e6 / np.mean(np.sum(amplitudes**2, axis=(-2, -1))))
    inputs = amplitudes * math.sqrt((_N / 2) ** 2 / np.mean(np.sum(amplitudes**2, axis=(-2, -1))))
    return inputs.astype(np.float32), offsets, amplitudes.astype(np.float32), patches


def _model(backend, amplitudes, **options):
    cfg = ModelConfig(N=_N, gridsize=2, n_filters_scale=2, **options)
    s0 = forward.initial_intensity_scale(amplitudes.reshape(-1, _N, _N), _probe(), cfg.probe_scale)
    return backend.network.build_model(cfg, _probe(), s0, seed=0)


def physics_rows(name, backend, *, quick=False):
    """Forward-model / FFT rate, network forward+backward rate and physics overhead of one backend."""
    physics = backend.physics
    batch = 16 if quick else 64
    repeats = 2 if quick else 5
    inputs, offsets, amplitudes, patches = _groups(batch)
    patterns = patches.size // (_N * _N)
    weights = physics.to_tensor(forward.window_weights(_N, pad_object=True, probe_big=True))
    patches_t, probe_t = physics.to_tensor(patches), physics.to_tensor(_probe())
    offsets_t = physics.to_tensor(offsets)

    def fft_only():
        physics.fft_amplitude_raw(patches_t)

    def forward_model():
        views = physics.assemble_group_canvas(patches_t, offsets_t, weights)
        physics.far_field_amplitude(physics.illuminate(views, probe_t, probe_scale=4.0), 100.0)

    fft_seconds = best_time(fft_only, repeats=repeats)
    forward_seconds = best_time(forward_model, repeats=repeats)
    bench = f"backends.{name}"
    rows = [
        Row(bench, "raw batched FFT", patterns / fft_seconds, "patterns/s", note=f"|fft2| of {patterns} x {_N}x{_N}"),
        Row(bench, "forward model / raw FFT rate", fft_seconds / forward_seconds, "ratio",
            note="group canvas (gridsize 2) + probe + FFT + modulus"),
    ]

    step_batch = 8 if quick else 16
    x, o, a, p = (v[:step_batch] for v in (inputs, offsets, amplitudes, patches))
    pinn = _model(backend, amplitudes)
    bare = _model(backend, amplitudes, model_type="supervised")
    backend.network.set_weights(bare, backend.network.get_weights(pinn))
    config = TrainingConfig(batch_size=step_batch, nll_weight=1.0, mae_weight=0.0)

    def bare_step():
        backend.training.loss_gradients(bare, x, o, a, config, target_patches=p)

    def full_step():
        backend.training.loss_gradients(pinn, x, o, a, config)

    bare_seconds = best_time(bare_step, repeats=repeats)
    full_seconds = best_time(full_step, repeats=repeats)
    step_patterns = x.shape[0] * x.shape[1]
    rows += [
        Row(bench, "network forward+backward", step_patterns / bare_seconds, "patterns/s",
            note=f"gridsize 2, n_filters_scale 2, batch {step_batch} groups"),
        Row(bench, "physics overhead (full step / network step)", full_seconds / bare_seconds, "ratio", "<= 1.2",
            note="loss gradients, same network and batch"),
    ]
    return rows


def training_rows(name, backend, *, quick=False, precision=None):
    """Training groups/s of ``backend.training.train`` (gridsize 2, n_filters_scale 2, batch 16)."""
    n_groups = 64 if quick else 256
    nepochs = 2 if quick else 3
    inputs, offsets, amplitudes, _ = _groups(n_groups, seed=1)
    model = _model(backend, amplitudes)
    options = {} if precision is None else {"precision": precision}
    config = TrainingConfig(
        batch_size=16, nepochs=nepochs, validation_fraction=0.0, logger="none", learning_rate=1e-3, **options
    )
    stamps = []
    backend.training.train(
        model, inputs, offsets, amplitudes, config, progress=False, callback=lambda record: stamps.append(time.perf_counter())
    )
    seconds = stamps[-1] - stamps[0]
    rate = n_groups * (nepochs - 1) / seconds
    label = "training" if precision is None else f"training ({precision})"
    return [
        Row(f"training.{name}", label, rate, "groups/s", f">= {_TRAINING_TARGET:.0f}",
            note=f"{n_groups} groups, epochs 2..{nepochs}; PtychoPINN TF: {_PTYCHOPINN_GROUPS_PER_S:.0f} at batch 8"),
    ]


def _inference_variants(name, backend, model, inputs, offsets, cfg):
    """``{label: fn()}`` of the inference paths to compare (see the module docstring)."""
    from ptycholib.workflow import inference_batch_size

    predict = backend.training.predict_patches
    auto = inference_batch_size(cfg)

    def run(batch, **options):
        return lambda: predict(model, inputs, offsets, batch_size=batch, **options)

    def eager(batch, context):
        def fn():
            for start in range(0, len(inputs), batch):
                with context():
                    backend.network.forward_model(model, inputs[start:start + batch], offsets[start:start + batch])
        return fn

    variants = {}
    if name == "torch":
        import copy

        import torch

        variants["eager no_grad, 256 groups/call (old path)"] = eager(256, torch.no_grad)
        variants["inference_mode, 256 groups/call"] = run(256)
        flat = copy.deepcopy(model)
        flat.net.to(memory_format=torch.contiguous_format)
        variants[f"inference_mode, channels-first weights, auto ({auto})"] = (
            lambda: predict(flat, inputs, offsets, batch_size=auto))
    else:
        import contextlib

        variants["eager Keras call, 256 groups/call"] = eager(256, contextlib.nullcontext)
        variants["tf.function, 256 groups/call"] = run(256)
        jit = backend.network.build_model(cfg, _probe(), 100.0, seed=0)
        backend.network.set_weights(jit, backend.network.get_weights(model))

        def with_xla():
            saved, backend.training._INFERENCE_JIT = backend.training._INFERENCE_JIT, True
            try:
                predict(jit, inputs, offsets, batch_size=auto)
            finally:
                backend.training._INFERENCE_JIT = saved
        variants[f"tf.function + XLA (jit_compile), auto ({auto})"] = with_xla
    for batch in sorted({max(1, auto // 2), auto * 4}):
        variants[f"batch {batch} groups/call"] = run(batch)
    variants[f"fast path: auto batch ({auto} groups/call)"] = run(auto)
    variants[f"fast path + bfloat16, auto ({auto})"] = run(auto, precision="bfloat16")
    return variants


def inference_rows(name, backend, gridsize, n_filters_scale, *, quick=False):
    """patterns/s of each inference variant (`_inference_variants`) for one configuration."""
    from ptycholib.bench.spec10 import PTYCHOPINN

    cfg = ModelConfig(N=_N, gridsize=gridsize, n_filters_scale=n_filters_scale)
    n_groups = (16 if quick else 256) // cfg.n_channels
    rng = np.random.default_rng(0)
    inputs = rng.random((n_groups, cfg.n_channels, _N, _N), dtype=np.float32)
    offsets = rng.uniform(-2, 2, (n_groups, cfg.n_channels, 2))
    model = backend.network.build_model(cfg, _probe(), 100.0, seed=0)
    variants = _inference_variants(name, backend, model, inputs, offsets, cfg)
    best = {label: math.inf for label in variants}
    for label, fn in variants.items():  # warm-up: tracing, compilation, oneDNN primitive caches
        fn()
    for _ in range(2 if quick else 4):  # interleaved rounds, so a busy moment does not favour one variant
        for label, fn in variants.items():
            start = time.perf_counter()
            fn()
            best[label] = min(best[label], time.perf_counter() - start)
    patterns = n_groups * cfg.n_channels
    bench = f"inference.{name}"
    prefix = f"gridsize {gridsize} n_filters_scale {n_filters_scale}"
    rows = [Row(bench, f"{prefix}: {label}", patterns / seconds, "patterns/s") for label, seconds in best.items()]
    float32 = {label: seconds for label, seconds in best.items() if "bfloat16" not in label}
    reference = PTYCHOPINN[(gridsize, n_filters_scale)][1]
    fastest = min(float32, key=float32.get)
    rows.append(Row(bench, f"{prefix}: fast path (auto batch) / PtychoPINN", patterns / best[next(
        label for label in best if label.startswith("fast path: auto"))] / reference, "ratio", ">= 1.5",
        note=f"PtychoPINN TF {reference:g} patterns/s (SPEC 10); best float32 variant: {fastest}"))
    return rows


@register("inference")
def inference_benchmark(quick):
    """Inference variants per backend and SPEC 10 configuration (see the module docstring)."""
    from ptycholib.bench.spec10 import PTYCHOPINN

    configs = [(2, 1)] if quick else list(PTYCHOPINN)
    rows = []
    for name, backend in _backend_modules().items():
        for gridsize, scale in configs:
            rows += inference_rows(name, backend, gridsize, scale, quick=quick)
    return rows


@register("backends")
def backends_benchmark(quick):
    """Physics and network speed per backend (see the module docstring)."""
    rows = []
    for name, backend in _backend_modules().items():
        rows += physics_rows(name, backend, quick=quick)
    return rows


@register("training")
def training_benchmark(quick):
    """Training groups/s per backend and their ratio (see the module docstring)."""
    rows = []
    rates = {}
    modules = _backend_modules()
    for name, backend in modules.items():
        backend_rows = training_rows(name, backend, quick=quick)
        rates[name] = backend_rows[0].value
        rows += backend_rows
    if "precision" in TrainingConfig.__dataclass_fields__ and "torch" in modules:
        rows += training_rows("torch", modules["torch"], quick=quick, precision="bf16-mixed")
    if len(rates) == 2:
        rows.append(Row("training", "torch / tensorflow training rate", rates["torch"] / rates["tensorflow"], "ratio"))
    return rows
