"""The PtychoPINN network and the physics-informed model in PyTorch (docs/architecture.md).

Module attribute names are the canonical weight names (``encoder.0.conv1.weight``), and
`get_weights` / `set_weights` exchange a dict of them with float32 arrays, conv kernels
``(out, in, kh, kw)``, with the other backend and the model archive. Layout is channels-first at the
boundary; inside, activations and kernels use torch's channels-last memory format (oneDNN's fast
path on CPUs). ``ptycholib.tensorflow.network`` is the same text in Keras.
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


# --------------------------------------------------------------------------------------------------
# building blocks


def _phase_activation(x):
    return math.pi * torch.tanh(x)


def _complex(amplitude, phase):
    """``amplitude * exp(i * phase)``; amplitude may be negative (swish head), so not a polar form."""
    return torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))


def _conv(width_in, width_out):
    """3x3 convolution, "same" zero padding, with bias."""
    return nn.Conv2d(width_in, width_out, kernel_size=3, padding=1)


def _narrow_conv(conv, x):
    """``conv(x)`` for the heads' 3x3 convolutions with one output channel.

    Outside autograd (inference) it is one matrix product ``(B*H*W, C_in) @ (C_in, 9 K)`` followed
    by nine shifted sums: oneDNN runs 1-output-channel convolutions at a few GFLOP/s, this is 2-4x
    faster per layer (the same products, summed in another order: equal within float32 rounding).
    With autograd on (training) it is ``conv(x)``.
    """
    if torch.is_grad_enabled() or conv.out_channels > 1:
        return conv(x)
    batch, width_in, rows, cols = x.shape
    k = conv.out_channels
    kernel = conv.weight.permute(1, 0, 2, 3).reshape(width_in, k * 9)
    taps = (x.permute(0, 2, 3, 1).reshape(-1, width_in) @ kernel).view(batch, rows, cols, k, 3, 3)
    taps = F.pad(taps.permute(0, 3, 4, 5, 1, 2), (1, 1, 1, 1))  # (B, K, 3, 3, H + 2, W + 2)
    out = conv.bias.view(1, k, 1, 1).expand(batch, k, rows, cols).clone()
    for i in range(3):
        for j in range(3):
            out += taps[:, :, i, j, i : i + rows, j : j + cols]
    return out


def _pool(x):
    """2x2 max-pooling, stride 2."""
    return F.max_pool2d(x, 2)


def _upsample(x):
    """Nearest-neighbour x2 upsampling (keeps the channels-last memory format)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _widths(size, scale):
    """Encoder and decoder widths for patch side ``size`` (table in docs/architecture.md)."""
    depth = (size // 8).bit_length() - 1  # log2(N / 8): 3 blocks at N=64, 4 at 128, 5 at 256
    encoder = [128 * scale // 2 ** (depth - 1 - k) for k in range(depth)]
    decoder = [32 * scale * 2 ** (depth - 2 - k) for k in range(depth - 1)]
    return encoder, decoder


def _chain(blocks, x):
    """Apply ``blocks`` in order."""
    for block in blocks:
        x = block(x)
    return x


class _ConvPair(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> ``resample``: ConvPool (`_pool`) or ConvUp (`_upsample`)."""

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
        return _narrow_conv(self.out, super().forward(x))


class _Head(nn.Module):
    """Output head of one decoder (amplitude or phase), see docs/architecture.md."""

    def __init__(self, features, channels, scale, size, *, pad_object, probe_big, activation):
        super().__init__()
        self.activation = activation
        self.pad_object = pad_object
        self.quarter = size // 4
        if pad_object:
            self.center = _conv(features - 4, channels)
            self.outer = _UpBranch(4, 32 * scale, channels) if probe_big else None
            # 1 outside the central N/2 x N/2 window, where only the outer ring predicts
            border = 1.0 - forward.window_weights(size, pad_object=True, probe_big=False)
            self.register_buffer("border", torch.as_tensor(border), persistent=False)
        else:
            self.full = _UpBranch(features, 32 * scale, channels)

    def forward(self, features):
        if not self.pad_object:
            return self.activation(self.full(features))
        q = self.quarter
        out = F.pad(self.activation(_narrow_conv(self.center, features[:, :-4])), (q, q, q, q))
        if self.outer is not None:
            out = out + self.activation(self.outer(features[:, -4:])) * self.border
        return out


# --------------------------------------------------------------------------------------------------
# the network and the physics-informed model


class PtychoNet(nn.Module):
    """PtychoPINN's encoder and amplitude/phase decoders (no physics).

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
        Uses ``N``, ``gridsize``, ``n_filters_scale``, ``amp_activation``, ``pad_object``, ``probe_big``.

    Notes
    -----
    ``net(inputs)`` maps normalised amplitudes ``(B, C, N, N)`` float32 to ``(amplitude, phase)``,
    each ``(B, K, N, N)`` float32 (``K = model_config.n_object_channels``). Groups never mix
    (SPEC 4.7). Inside, activations and kernels use torch's channels-last memory format (about 1.3x
    faster training on CPUs); shapes and weight layouts stay ``(B, C, H, W)`` / ``(out, in, kh, kw)``.
    """

    def __init__(self, model_config):
        super().__init__()
        if model_config.amp_activation not in _ACTIVATIONS:
            raise ValueError(
                f"amp_activation={model_config.amp_activation!r} is not supported; use one of {sorted(_ACTIVATIONS)}."
            )
        size, scale = model_config.N, model_config.n_filters_scale
        self.model_config = model_config
        self.patch_size, self.n_channels = size, model_config.n_channels
        encoder, decoder = _widths(size, scale)
        pairs = list(zip([self.n_channels] + encoder[:-1], encoder))
        self.encoder = nn.ModuleList([_ConvPair(width_in, width, _pool) for width_in, width in pairs])
        pairs = list(zip(encoder[-1:] + decoder[:-1], decoder))
        self.decoder_amp = nn.ModuleList([_ConvPair(width_in, width, _upsample) for width_in, width in pairs])
        self.decoder_phase = nn.ModuleList([_ConvPair(width_in, width, _upsample) for width_in, width in pairs])
        options = dict(pad_object=model_config.pad_object, probe_big=model_config.probe_big)
        head = (decoder[-1], model_config.n_object_channels, scale, size)
        self.head_amp = _Head(*head, activation=_ACTIVATIONS[model_config.amp_activation], **options)
        self.head_phase = _Head(*head, activation=_phase_activation, **options)
        self.to(memory_format=torch.channels_last)

    def forward(self, inputs):
        bottleneck = _chain(self.encoder, inputs.contiguous(memory_format=torch.channels_last))
        amplitude = self.head_amp(_chain(self.decoder_amp, bottleneck))
        phase = self.head_phase(_chain(self.decoder_phase, bottleneck))
        return amplitude.contiguous(), phase.contiguous()


class _PhysicsParameters(nn.Module):
    """``log_intensity_scale`` (scalar) and ``probe`` (real ``(N, N, 2)``: real and imaginary parts)."""

    def __init__(self, probe, intensity_scale):
        super().__init__()
        self.log_intensity_scale = nn.Parameter(torch.tensor(float(np.log(intensity_scale)), dtype=torch.float32))
        self.probe = nn.Parameter(torch.view_as_real(torch.as_tensor(probe)).clone(), requires_grad=False)


class PhysicsModel(nn.Module):
    """Network plus probe and intensity scale: the physics-informed model of docs/architecture.md.

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
    probe : ndarray of shape (N, N), complex64
        Probe on the object grid, before normalisation (`ptycholib.forward.check_physics_inputs`).
    intensity_scale : float
        Initial ``s`` (stored as ``log s``).

    Notes
    -----
    ``model(inputs, offsets)`` returns ``(object_patches, predicted_amplitudes)`` as `forward_model`:
    the network's patches through `ptycholib.torch.physics.forward_model`. ``model.physics`` holds
    the parameters ``physics.log_intensity_scale`` and ``physics.probe``, a real ``(N, N, 2)`` array
    (so DDP and every optimiser see plain floats; Adam treats it exactly as a complex parameter). At
    build time the probe is frozen and ``log s`` trains (the TrainingConfig defaults);
    `ptycholib.torch.training.train` applies the configured ``probe_trainable`` /
    ``intensity_scale_trainable`` and each stage's settings.
    """

    def __init__(self, model_config, probe, intensity_scale):
        super().__init__()
        probe = forward.check_physics_inputs(model_config, probe, intensity_scale)
        self.model_config = model_config
        self.net = PtychoNet(model_config)
        self.physics = _PhysicsParameters(probe, intensity_scale)
        window = forward.window_weights(model_config.N, pad_object=model_config.pad_object, probe_big=model_config.probe_big)
        self.register_buffer("window", torch.as_tensor(window), persistent=False)

    @property
    def probe(self):
        """The probe as a complex64 tensor ``(N, N)`` (a differentiable view of the parameter)."""
        return torch.view_as_complex(self.physics.probe)

    @property
    def intensity_scale(self):
        """SPEC's ``s = exp(log_intensity_scale)`` as a scalar tensor."""
        return torch.exp(self.physics.log_intensity_scale)

    def forward(self, inputs, offsets):
        amplitude, phase = self.net(inputs)
        # Under mixed-precision autocast only the network runs in low precision; physics is float32.
        with torch.autocast(inputs.device.type, enabled=False):
            steps = physics.forward_model(
                self.model_config, _complex(amplitude.float(), phase.float()), offsets, self.probe,
                self.intensity_scale, window=self.window,
            )
        return steps["views"], steps["amplitudes"]


# --------------------------------------------------------------------------------------------------
# construction


def _glorot_init(net, seed):
    """Draw Glorot-uniform kernels (a private generator seeded with ``seed``) and zero the biases."""
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    for conv in _named_convs(net).values():
        nn.init.xavier_uniform_(conv.weight, generator=generator)
        nn.init.zeros_(conv.bias)


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


# --------------------------------------------------------------------------------------------------
# running


def _network_of(model_or_net):
    if isinstance(model_or_net, PhysicsModel):
        return model_or_net.net
    if isinstance(model_or_net, PtychoNet):
        return model_or_net
    raise TypeError(f"expected a PtychoNet or PhysicsModel from {__package__}; got {type(model_or_net).__name__}.")


def _as_inputs(net, inputs):
    """``inputs`` as a float32 tensor on the network's device, shape checked."""
    inputs = physics.to_tensor(inputs, device=next(net.parameters()).device)
    expected = (net.n_channels, net.patch_size, net.patch_size)
    if inputs.ndim != 4 or tuple(inputs.shape[1:]) != expected:
        raise ValueError(
            f"inputs must have shape (B, {', '.join(map(str, expected))}) (channels-first); got {tuple(inputs.shape)}."
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
    object_patches : tensor of shape (B, C, N, N), complex64
        The patches that are illuminated: the group-canvas views when ``object_big`` and C > 1,
        otherwise the network's patches.
    predicted_amplitudes : tensor of shape (B, C, N, N), float32
        ``s * |fftshift(fft2(P_hat * O))| / N``.

    Notes
    -----
    The network (`predict_object`) followed by ``physics.forward_model``, the twin of
    `ptycholib.forward.forward_model`.
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
    tensor of shape (B, K, N, N), complex64
        Before any group-canvas merge (no offsets are involved); ``K = n_object_channels``.
    """
    net = _network_of(model_or_net)
    amplitude, phase = net(_as_inputs(net, inputs))
    return _complex(amplitude.float(), phase.float())  # float32 also under bfloat16 autocast


# --------------------------------------------------------------------------------------------------
# canonical weights


def _named_convs(net):
    """``{canonical prefix: convolution}`` of a PtychoNet, e.g. ``encoder.0.conv1``."""
    return {name: module for name, module in net.named_modules() if isinstance(module, nn.Conv2d)}


def _canonical_parameters(model_or_net):
    """Return ``{canonical name: parameter}``; the probe parameter is real ``(N, N, 2)``."""
    parameters = {}
    for prefix, conv in _named_convs(_network_of(model_or_net)).items():
        parameters[f"{prefix}.weight"] = conv.weight
        parameters[f"{prefix}.bias"] = conv.bias
    if isinstance(model_or_net, PhysicsModel):
        parameters["physics.log_intensity_scale"] = model_or_net.physics.log_intensity_scale
        parameters["physics.probe"] = model_or_net.physics.probe
    return parameters


def _to_canonical(name, value):
    """A parameter's (or gradient's) NumPy value in the canonical layout: a float32 copy, the probe complex64."""
    if name == "physics.probe":
        return (value[..., 0] + 1j * value[..., 1]).astype(np.complex64)
    return np.array(value, dtype=np.float32, order="C")


def _from_canonical(name, value):
    """The inverse of `_to_canonical`: a float32 array in the parameter's layout."""
    if name == "physics.probe":
        value = np.stack([np.real(value), np.imag(value)], axis=-1)
    return np.asarray(value, dtype=np.float32, order="C")


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
    parameters = _canonical_parameters(model_or_net)
    return {name: _to_canonical(name, physics.to_numpy(parameter)) for name, parameter in parameters.items()}


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
        expected = _to_canonical(name, np.zeros(tuple(parameter.shape), np.float32)).shape
        if value.shape != expected:
            raise ValueError(f"weight {name!r} has shape {value.shape}; this model expects {expected}.")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"weight {name!r} contains NaN or Inf values.")
        updates.append((parameter, _from_canonical(name, value)))
    with torch.no_grad():
        for parameter, value in updates:
            parameter.copy_(torch.as_tensor(value))
