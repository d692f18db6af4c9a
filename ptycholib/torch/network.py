"""The PtychoPINN network and the physics-informed model in PyTorch (docs/architecture.md).

Module attribute names are the canonical weight names, so ``net.state_dict()`` keys are the
backend-neutral names of docs/architecture.md and `get_weights` / `set_weights` only convert layouts
(torch already stores conv kernels as ``(out, in, kh, kw)``; the probe is held as a real
``(N, N, 2)`` parameter and exported as complex64). Layout is channels-first throughout.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import forward
from .._checks import check_same_keys
from . import physics

__all__ = [
    "PtychoNet",
    "PhysicsModel",
    "build_network",
    "build_model",
    "forward_model",
    "predict_object",
    "get_weights",
    "set_weights",
]

_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "swish": F.silu,  # x * sigmoid(x)
    "softplus": F.softplus,
    "relu": F.relu,
}


def _phase_activation(x):
    return math.pi * torch.tanh(x)


def _conv(width_in, width_out):
    return nn.Conv2d(width_in, width_out, kernel_size=3, padding=1)


def _upsample(x):
    """Nearest-neighbour x2 upsampling (keeps the channels-last memory format)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _widths(size, scale):
    """Encoder and decoder widths for patch side ``size`` (table in docs/architecture.md)."""
    depth = int(round(math.log2(size // 8)))  # 3 blocks at N=64, 4 at 128, 5 at 256
    encoder = [128 * scale // 2 ** (depth - 1 - k) for k in range(depth)]
    decoder = [32 * scale * 2 ** (depth - 2 - k) for k in range(depth - 1)]
    return encoder, decoder


def _pool(x):
    return F.max_pool2d(x, 2)


class _ConvPair(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> ``resample``: ConvPool (2x2 max-pool) or ConvUp (nearest x2)."""

    def __init__(self, width_in, width, resample):
        super().__init__()
        self.conv0 = _conv(width_in, width)
        self.conv1 = _conv(width, width)
        self.resample = resample

    def forward(self, x):
        return self.resample(F.relu(self.conv1(F.relu(self.conv0(x)))))


class _UpBranch(_ConvPair):
    """ConvUp(width_in, width) -> conv(width, channels): the outer-ring and full-size heads."""

    def __init__(self, width_in, width, channels):
        super().__init__(width_in, width, _upsample)
        self.out = _conv(width, channels)

    def forward(self, x):
        return self.out(super().forward(x))


class _Head(nn.Module):
    """Output head of one decoder (amplitude or phase), see docs/architecture.md."""

    def __init__(self, features, channels, scale, size, *, pad_object, probe_big, activation):
        super().__init__()
        self.activation = activation
        self.pad_object = pad_object
        self.quarter = size // 4
        if pad_object:
            self.center = _conv(features - 4, channels)
            if probe_big:
                self.outer = _UpBranch(4, 32 * scale, channels)
                border = 1.0 - forward.window_weights(size, pad_object=True, probe_big=False)
                self.register_buffer("border", torch.as_tensor(border), persistent=False)
            else:
                self.outer = None
        else:
            self.full = _UpBranch(features, 32 * scale, channels)

    def forward(self, features):
        if not self.pad_object:
            return self.activation(self.full(features))
        q = self.quarter
        out = F.pad(self.activation(self.center(features[:, :-4])), (q, q, q, q))
        if self.outer is not None:
            out = out + self.activation(self.outer(features[:, -4:])) * self.border
        return out


class PtychoNet(nn.Module):
    """PtychoPINN's encoder and amplitude/phase decoders (no physics).

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
        Uses ``N``, ``gridsize``, ``n_filters_scale``, ``amp_activation``, ``pad_object``, ``probe_big``.

    Notes
    -----
    ``net(inputs)`` maps normalised amplitudes ``(B, C, N, N)`` float32 to ``(amplitude, phase)``,
    each ``(B, C, N, N)`` float32. Groups never mix (SPEC 4.7). Inside, activations and kernels use
    torch's channels-last memory format (oneDNN's fast path on CPUs, about 1.3x faster training
    here); shapes and weight layouts stay ``(B, C, H, W)`` / ``(out, in, kh, kw)``.
    """

    def __init__(self, model_config):
        super().__init__()
        size, scale = model_config.N, model_config.n_filters_scale
        channels = model_config.n_channels
        self.patch_size, self.n_channels = size, channels
        outputs = model_config.n_object_channels
        encoder, decoder = _widths(size, scale)
        self.encoder = nn.Sequential(*[_ConvPair(w_in, w, _pool) for w_in, w in zip([channels] + encoder[:-1], encoder)])
        decoder_pairs = list(zip(encoder[-1:] + decoder[:-1], decoder))
        self.decoder_amp = nn.Sequential(*[_ConvPair(w_in, w, _upsample) for w_in, w in decoder_pairs])
        self.decoder_phase = nn.Sequential(*[_ConvPair(w_in, w, _upsample) for w_in, w in decoder_pairs])
        options = dict(pad_object=model_config.pad_object, probe_big=model_config.probe_big)
        features = decoder[-1]
        self.head_amp = _Head(
            features, outputs, scale, size, activation=_ACTIVATIONS[model_config.amp_activation], **options
        )
        self.head_phase = _Head(features, outputs, scale, size, activation=_phase_activation, **options)
        self.to(memory_format=torch.channels_last)

    def forward(self, inputs):
        bottleneck = self.encoder(inputs.contiguous(memory_format=torch.channels_last))
        amplitude = self.head_amp(self.decoder_amp(bottleneck))
        phase = self.head_phase(self.decoder_phase(bottleneck))
        return amplitude.contiguous(), phase.contiguous()


class _PhysicsParameters(nn.Module):
    """``log_intensity_scale`` (scalar) and ``probe`` (real ``(N, N, 2)``: real and imaginary parts)."""

    def __init__(self, probe, intensity_scale):
        super().__init__()
        probe = np.asarray(probe, dtype=np.complex64)
        self.log_intensity_scale = nn.Parameter(torch.tensor(float(np.log(intensity_scale)), dtype=torch.float32))
        self.probe = nn.Parameter(torch.view_as_real(torch.as_tensor(probe)).clone(), requires_grad=False)


class PhysicsModel(nn.Module):
    """Network plus probe and intensity scale: the physics-informed model of docs/architecture.md.

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
    probe : ndarray of shape (N, N), complex64
        Probe on the object grid, before normalisation.
    intensity_scale : float
        Initial ``s`` (stored as ``log s``).

    Notes
    -----
    ``model(inputs, offsets)`` returns ``(object_patches, predicted_amplitudes)`` as `forward_model`.
    The probe is a real parameter ``(N, N, 2)`` (so DDP and every optimiser see plain floats; Adam
    treats it exactly as a complex parameter). At build time the probe is frozen and ``log s`` trains
    (the TrainingConfig defaults); `ptycholib.torch.training.train` applies the configured
    ``probe_trainable`` / ``intensity_scale_trainable`` and each stage's settings.
    """

    def __init__(self, model_config, probe, intensity_scale):
        super().__init__()
        size = model_config.N
        probe = np.asarray(probe)
        if probe.shape != (size, size):
            raise ValueError(f"probe has shape {probe.shape} but N={size}; pass the (N, N) probe on the object grid.")
        if not np.all(np.isfinite(probe)):
            raise ValueError("probe contains NaN or Inf values.")
        if not (np.isfinite(intensity_scale) and intensity_scale > 0):
            raise ValueError(f"intensity_scale={intensity_scale!r} must be a positive finite number.")
        self.model_config = model_config
        self.net = PtychoNet(model_config)
        self.physics = _PhysicsParameters(probe, intensity_scale)
        window = forward.window_weights(size, pad_object=model_config.pad_object, probe_big=model_config.probe_big)
        self.register_buffer("window", torch.as_tensor(window), persistent=False)

    @property
    def probe(self):
        """The probe as a complex64 tensor ``(N, N)`` (a differentiable view of the parameter)."""
        return torch.view_as_complex(self.physics.probe)

    @property
    def intensity_scale(self):
        """SPEC's ``s = exp(log_intensity_scale)`` as a scalar tensor."""
        return torch.exp(self.physics.log_intensity_scale)

    def illuminated_patches(self, object_patches, offsets):
        """The C views the probe illuminates (`ptycholib.forward.group_views`): group-canvas views
        (``object_big``), views of the group's one object (not ``object_big``), or the patches (C = 1)."""
        cfg = self.model_config
        if cfg.gridsize == 1:
            return object_patches
        if cfg.object_big:
            return physics.assemble_group_canvas(object_patches, offsets, self.window)
        return physics.shared_object_views(object_patches, offsets)

    def forward(self, inputs, offsets):
        cfg = self.model_config
        amplitude, phase = self.net(inputs)
        # Under mixed-precision autocast only the network runs in low precision; physics is float32.
        with torch.autocast(inputs.device.type, enabled=False):
            views = self.illuminated_patches(_complex(amplitude.float(), phase.float()), offsets)
            exit_wave = physics.illuminate(
                views,
                self.probe,
                probe_scale=cfg.probe_scale,
                probe_mask=cfg.probe_mask,
                gaussian_smoothing_sigma=cfg.gaussian_smoothing_sigma,
            )
            return views, physics.far_field_amplitude(exit_wave, self.intensity_scale)


def _complex(amplitude, phase):
    """``amplitude * exp(i * phase)``; amplitude may be negative (swish head), so not torch.polar."""
    return torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))


def _glorot_init(module, seed):
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)


def build_network(model_config, *, seed=None):
    """Build the PtychoPINN network with Glorot-uniform kernels and zero biases.

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
    seed : int, optional
        Seeds the initial weights (a private generator; torch's global RNG is untouched). None draws
        from torch's global RNG.

    Returns
    -------
    PtychoNet
        ``net(x)`` maps ``(B, C, N, N)`` to ``(amplitude, phase)``.
    """
    net = PtychoNet(model_config)
    _glorot_init(net, seed)
    return net


def build_model(model_config, probe, intensity_scale, *, seed=None):
    """Build the physics-informed model: network, probe and log intensity scale.

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
    probe : ndarray of shape (N, N), complex64
        Probe on the object grid, before normalisation (stored as ``physics.probe``).
    intensity_scale : float
        Initial ``s`` (stored as ``physics.log_intensity_scale = log s``), e.g.
        `ptycholib.forward.initial_intensity_scale`.
    seed : int, optional
        Seeds the network's initial weights (see `build_network`).

    Returns
    -------
    PhysicsModel
        ``forward_model(model, inputs, offsets)`` runs it. The probe starts frozen and ``log s``
        trainable; `ptycholib.torch.training.train` applies the TrainingConfig.
    """
    model = PhysicsModel(model_config, probe, intensity_scale)
    _glorot_init(model.net, seed)
    return model


def _network_of(model_or_net):
    if isinstance(model_or_net, PhysicsModel):
        return model_or_net.net
    if isinstance(model_or_net, PtychoNet):
        return model_or_net
    raise TypeError(f"expected a PtychoNet or PhysicsModel from ptycholib.torch; got {type(model_or_net).__name__}.")


def _as_inputs(net, inputs, name="inputs"):
    device = next(net.parameters()).device
    inputs = physics.to_tensor(inputs, device=device)
    expected = (net.n_channels, net.patch_size, net.patch_size)
    if inputs.ndim != 4 or tuple(inputs.shape[1:]) != expected:
        raise ValueError(
            f"{name} must have shape (B, {', '.join(map(str, expected))}) (channels-first); got {tuple(inputs.shape)}."
        )
    return inputs


def forward_model(model, inputs, offsets):
    """Run the physics-informed forward pass (docs/architecture.md steps 1-4).

    Parameters
    ----------
    model : PhysicsModel
    inputs : tensor or ndarray of shape (B, C, N, N), float32
        Normalised amplitudes ``x = g * a``.
    offsets : tensor or ndarray of shape (B, C, 2)
        Position minus group mean in pixels, last axis ``(x, y)``.

    Returns
    -------
    object_patches : torch.Tensor of shape (B, C, N, N), complex64
        The patches that are illuminated: the group-canvas views when ``object_big`` and C > 1,
        otherwise the network's patches.
    predicted_amplitudes : torch.Tensor of shape (B, C, N, N), float32
        ``s * |fftshift(fft2(P_hat * O))| / N``.
    """
    if not isinstance(model, PhysicsModel):
        raise TypeError(f"forward_model needs the model from build_model; got {type(model).__name__}.")
    inputs = _as_inputs(model.net, inputs)
    offsets = physics.to_tensor(offsets, device=inputs.device)
    if tuple(offsets.shape) != (inputs.shape[0], model.net.n_channels, 2):
        raise ValueError(
            f"offsets must have shape ({inputs.shape[0]}, {model.net.n_channels}, 2) with last axis (x, y); "
            f"got {tuple(offsets.shape)}."
        )
    return model(inputs, offsets)


def predict_object(model_or_net, inputs):
    """Return the network's complex object patches ``amplitude * exp(i * phase)``.

    Parameters
    ----------
    model_or_net : PhysicsModel or PtychoNet
    inputs : tensor or ndarray of shape (B, C, N, N), float32

    Returns
    -------
    torch.Tensor of shape (B, C, N, N), complex64
        Before any group-canvas merge (no offsets are involved).
    """
    net = _network_of(model_or_net)
    amplitude, phase = net(_as_inputs(net, inputs))
    return _complex(amplitude, phase)


def _canonical_parameters(model_or_net):
    """Return ``{canonical name: parameter}``; the probe parameter is real ``(N, N, 2)``."""
    net = _network_of(model_or_net)
    parameters = dict(net.named_parameters())
    if isinstance(model_or_net, PhysicsModel):
        parameters["physics.log_intensity_scale"] = model_or_net.physics.log_intensity_scale
        parameters["physics.probe"] = model_or_net.physics.probe
    return parameters


def get_weights(model_or_net):
    """Export every parameter under its canonical name (docs/architecture.md).

    Parameters
    ----------
    model_or_net : PhysicsModel or PtychoNet

    Returns
    -------
    dict of str to ndarray
        float32 copies, conv kernels ``(out, in, kh, kw)``, biases ``(out,)``; a PhysicsModel adds
        ``physics.log_intensity_scale`` (shape ``()``) and ``physics.probe`` ((N, N) complex64).
    """
    weights = {}
    for name, parameter in _canonical_parameters(model_or_net).items():
        value = parameter.detach().cpu()
        if name == "physics.probe":
            weights[name] = torch.view_as_complex(value.contiguous()).numpy().astype(np.complex64)
        else:
            weights[name] = np.array(value.numpy(), dtype=np.float32, order="C")  # a copy
    return weights


def set_weights(model_or_net, weights):
    """Load parameters from canonical names, strictly.

    Parameters
    ----------
    model_or_net : PhysicsModel or PtychoNet
    weights : mapping of str to ndarray
        Exactly the keys `get_weights` returns, with the same shapes (conv kernels
        ``(out, in, kh, kw)``).

    Raises
    ------
    ValueError
        Naming every missing or unexpected key, or the first key whose shape differs or whose values
        are not finite. Nothing is changed when it raises.
    """
    parameters = _canonical_parameters(model_or_net)
    check_same_keys(
        weights, parameters, f"canonical weights do not match this {type(model_or_net).__name__}",
        hint="Build the model with the same ModelConfig (N, gridsize, n_filters_scale, pad_object, probe_big) "
        "that produced the weights.",
    )
    updates = []
    for name, parameter in parameters.items():
        value = np.asarray(weights[name])
        if name == "physics.probe":
            expected = tuple(parameter.shape[:2])
            value = np.stack([np.real(value), np.imag(value)], axis=-1)
        else:
            expected = tuple(parameter.shape)
        if np.asarray(weights[name]).shape != expected:
            raise ValueError(f"weight {name!r} has shape {np.asarray(weights[name]).shape}; this model expects {expected}.")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"weight {name!r} contains NaN or Inf values.")
        updates.append((parameter, value))
    with torch.no_grad():
        for parameter, value in updates:
            parameter.copy_(torch.as_tensor(np.asarray(value, dtype=np.float32)))
