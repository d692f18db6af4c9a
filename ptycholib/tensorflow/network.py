"""The PtychoPINN network and the physics-informed model in Keras 3 (docs/architecture.md).

The network runs channels-last inside (TensorFlow's CPU convolutions and pooling want NHWC) and
takes and returns channels-first tensors at its boundary. Parameters are exchanged with the torch
backend and the model archive through `get_weights` / `set_weights`: a dict of canonical dotted names
to float32 arrays, conv kernels ``(out, in, kh, kw)``.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from .. import forward
from .._checks import check_same_keys
from . import physics

__all__ = [
    "PhysicsModel",
    "PtychoNet",
    "build_model",
    "build_network",
    "forward_model",
    "get_weights",
    "predict_object",
    "set_weights",
]

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"Keras runs on the {keras.backend.backend()!r} backend, but ptycholib.tensorflow needs Keras on "
        "TensorFlow; unset KERAS_BACKEND (or set KERAS_BACKEND=tensorflow) before importing keras."
    )

_ACTIVATIONS = {
    "sigmoid": tf.sigmoid,
    "swish": lambda x: x * tf.sigmoid(x),
    "softplus": tf.math.softplus,
    "relu": tf.nn.relu,
}


def _phase_activation(x):
    return math.pi * tf.tanh(x)


def _upsample_nearest(x):
    """Nearest-neighbour x2 upsampling of NHWC tensors (a broadcast, so its gradient is a sum)."""
    shape = tf.shape(x)
    doubled = tf.broadcast_to(x[:, :, None, :, None, :], [shape[0], shape[1], 2, shape[2], 2, shape[3]])
    return tf.reshape(doubled, [shape[0], 2 * shape[1], 2 * shape[2], shape[3]])


def _conv(width, name):
    return keras.layers.Conv2D(
        width,
        3,
        padding="same",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        name=name,
    )


def _widths(size, scale):
    """Encoder and decoder widths for patch side ``size`` (table in docs/architecture.md)."""
    depth = (size // 8).bit_length() - 1  # log2(N / 8): 3 blocks at N=64, 4 at 128, 5 at 256
    encoder = [128 * scale // 2 ** (depth - 1 - k) for k in range(depth)]
    decoder = [32 * scale * 2 ** (depth - 2 - k) for k in range(depth - 1)]
    return encoder, decoder


class PtychoNet(keras.Model):
    """PtychoPINN's encoder and amplitude/phase decoders (no physics).

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
        Uses ``N``, ``gridsize``, ``n_filters_scale``, ``amp_activation``, ``pad_object``, ``probe_big``.

    Notes
    -----
    ``call(inputs)`` takes normalised amplitudes ``(B, C, N, N)`` float32 and returns
    ``(amplitude, phase)``, each ``(B, C, N, N)`` float32. Groups never mix (SPEC 4.7).
    """

    def __init__(self, model_config, **kwargs):
        super().__init__(**kwargs)
        self.model_config = model_config
        size, scale = model_config.N, model_config.n_filters_scale
        self.patch_size = size
        self.n_channels = model_config.n_channels
        outputs = model_config.n_object_channels
        if model_config.amp_activation not in _ACTIVATIONS:
            raise ValueError(
                f"amp_activation={model_config.amp_activation!r} is not supported; use one of {sorted(_ACTIVATIONS)}."
            )
        self._amp_activation = _ACTIVATIONS[model_config.amp_activation]
        encoder_widths, decoder_widths = _widths(size, scale)
        self._encoder_depth, self._decoder_depth = len(encoder_widths), len(decoder_widths)
        self.feature_width = 32 * scale
        # Every layer is built here from known widths, so no symbolic trace is needed on first call.
        self.convs = {}  # canonical prefix (e.g. "encoder.0.conv1") -> Conv2D, in call order
        width_in = self.n_channels
        for i, width in enumerate(encoder_widths):
            self._add_pair(f"encoder.{i}", width_in, width)
            width_in = width
        bottleneck = width_in
        for branch in ("amp", "phase"):
            width_in = bottleneck
            for i, width in enumerate(decoder_widths):
                self._add_pair(f"decoder_{branch}.{i}", width_in, width)
                width_in = width
            head = f"head_{branch}"
            if model_config.pad_object:
                self._add_conv(f"{head}.center", self.feature_width - 4, outputs)
                if model_config.probe_big:
                    self._add_pair(f"{head}.outer", 4, self.feature_width)
                    self._add_conv(f"{head}.outer.out", self.feature_width, outputs)
            else:
                self._add_pair(f"{head}.full", self.feature_width, self.feature_width)
                self._add_conv(f"{head}.full.out", self.feature_width, outputs)
        self._conv_list = list(self.convs.values())  # tracked by Keras
        self.built = True
        quarter = size // 4
        border = np.ones((1, size, size, 1), dtype=np.float32)
        border[:, quarter : size - quarter, quarter : size - quarter, :] = 0.0
        self._border = tf.constant(border)

    def _add_conv(self, prefix, width_in, width):
        conv = _conv(width, prefix.replace(".", "_"))
        conv.build((None, None, None, width_in))
        self.convs[prefix] = conv

    def _add_pair(self, prefix, width_in, width):
        self._add_conv(f"{prefix}.conv0", width_in, width)
        self._add_conv(f"{prefix}.conv1", width, width)

    def _pair(self, prefix, x):
        x = tf.nn.relu(self.convs[f"{prefix}.conv0"](x))
        return tf.nn.relu(self.convs[f"{prefix}.conv1"](x))

    def _head(self, prefix, x):
        """Last convolution of a head; activations and everything after them run in float32."""
        return tf.cast(self.convs[prefix](x), tf.float32)

    def _decode(self, features, branch, activation):
        x = features
        for i in range(self._decoder_depth):
            x = _upsample_nearest(self._pair(f"decoder_{branch}.{i}", x))
        head = f"head_{branch}"
        if self.model_config.pad_object:
            quarter = self.patch_size // 4
            center = activation(self._head(f"{head}.center", x[..., : self.feature_width - 4]))
            out = tf.pad(center, [[0, 0], [quarter, quarter], [quarter, quarter], [0, 0]])
            if self.model_config.probe_big:
                outer = _upsample_nearest(self._pair(f"{head}.outer", x[..., self.feature_width - 4 :]))
                out = out + activation(self._head(f"{head}.outer.out", outer)) * self._border
            return out
        full = _upsample_nearest(self._pair(f"{head}.full", x))
        return activation(self._head(f"{head}.full.out", full))

    def call(self, inputs):
        x = tf.transpose(tf.cast(inputs, tf.float32), [0, 2, 3, 1])
        for i in range(self._encoder_depth):
            x = tf.nn.max_pool2d(self._pair(f"encoder.{i}", x), 2, 2, "VALID")
        amplitude = self._decode(x, "amp", self._amp_activation)
        phase = self._decode(x, "phase", _phase_activation)
        return tf.transpose(amplitude, [0, 3, 1, 2]), tf.transpose(phase, [0, 3, 1, 2])


class PhysicsModel(keras.Model):
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
    The probe is held as two float32 variables (real and imaginary parts), so Adam treats it like
    torch does a complex parameter (as a pair of reals). Trainability of the probe and of ``log s``
    is set by `ptycholib.tensorflow.training.train` from the TrainingConfig and the stage; at build
    time the probe is frozen and ``log s`` trains (the TrainingConfig defaults).
    """

    def __init__(self, model_config, probe, intensity_scale, **kwargs):
        super().__init__(**kwargs)
        probe = np.asarray(probe)
        size = model_config.N
        if probe.shape != (size, size):
            raise ValueError(f"probe has shape {probe.shape} but N={size}; pass the (N, N) probe on the object grid.")
        if not np.all(np.isfinite(probe)):
            raise ValueError("probe contains NaN or Inf values.")
        if not (np.isfinite(intensity_scale) and intensity_scale > 0):
            raise ValueError(f"intensity_scale={intensity_scale!r} must be a positive finite number.")
        self.model_config = model_config
        self.net = PtychoNet(model_config, name="net")
        # Created trainable so that TensorFlow records their gradients; Keras's flag (set below and
        # by training.train) decides whether the optimiser updates them.
        self.probe_real = self.add_weight(
            shape=(size, size),
            initializer=keras.initializers.Constant(probe.real.astype(np.float32)),
            trainable=True,
            name="probe_real",
        )
        self.probe_imag = self.add_weight(
            shape=(size, size),
            initializer=keras.initializers.Constant(probe.imag.astype(np.float32)),
            trainable=True,
            name="probe_imag",
        )
        self.log_intensity_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float(np.log(intensity_scale))),
            trainable=True,
            name="log_intensity_scale",
        )
        self.probe_real.trainable = False
        self.probe_imag.trainable = False
        self._window = tf.constant(
            forward.window_weights(size, pad_object=model_config.pad_object, probe_big=model_config.probe_big)
        )
        self.built = True

    @property
    def probe(self):
        """The probe as a complex64 tensor ``(N, N)``."""
        return tf.complex(self.probe_real, self.probe_imag)

    def illuminated_patches(self, object_patches, offsets):
        """The C views the probe illuminates (`ptycholib.forward.group_views`): group-canvas views
        (``object_big``), views of the group's one object (not ``object_big``), or the patches (C = 1)."""
        cfg = self.model_config
        if cfg.gridsize == 1:
            return object_patches
        if cfg.object_big:
            return physics.assemble_group_canvas(object_patches, offsets, self._window)
        return physics.shared_object_views(object_patches, offsets)

    def physics(self, object_patches, offsets):
        """Return ``(object_patches_on_canvas, predicted_amplitudes)`` from network patches."""
        cfg = self.model_config
        object_patches = self.illuminated_patches(object_patches, offsets)
        exit_wave = physics.illuminate(
            object_patches,
            self.probe,
            probe_scale=cfg.probe_scale,
            probe_mask=cfg.probe_mask,
            gaussian_smoothing_sigma=cfg.gaussian_smoothing_sigma,
        )
        return object_patches, physics.far_field_amplitude(exit_wave, tf.exp(self.log_intensity_scale))

    def call(self, inputs):
        x, offsets = inputs
        amplitude, phase = self.net(x)
        return self.physics(tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase)), offsets)


def _glorot_init(net, seed):
    """Draw Glorot-uniform kernels from ``np.random.default_rng(seed)`` and zero the biases."""
    rng = np.random.default_rng(int(seed))
    for conv in net.convs.values():
        kh, kw, width_in, width_out = conv.kernel.shape
        limit = math.sqrt(6.0 / (kh * kw * (width_in + width_out)))
        conv.kernel.assign(rng.uniform(-limit, limit, size=(kh, kw, width_in, width_out)).astype(np.float32))
        conv.bias.assign(np.zeros(conv.bias.shape, dtype=np.float32))


def build_network(model_config, *, seed=None):
    """Build the PtychoPINN network with Glorot-uniform kernels and zero biases.

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
    seed : int, optional
        Seeds the initial weights (a private NumPy generator; Keras's global RNG is untouched). None
        draws from Keras's global RNG.

    Returns
    -------
    PtychoNet
        Built (its weights exist); ``net(x)`` maps ``(B, C, N, N)`` to ``(amplitude, phase)``.
    """
    net = PtychoNet(model_config, name="ptycho_net")
    if seed is not None:
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
        Built; ``forward_model(model, inputs, offsets)`` runs it. The probe starts frozen and
        ``log s`` trainable; `ptycholib.tensorflow.training.train` applies the TrainingConfig's
        ``probe_trainable`` / ``intensity_scale_trainable`` and each stage's settings.
    """
    model = PhysicsModel(model_config, probe, intensity_scale, name="physics_model")
    if seed is not None:
        _glorot_init(model.net, seed)
    return model


def _as_inputs(inputs, channels, size, name="inputs"):
    inputs = physics.to_tensor(inputs)
    if inputs.shape.rank != 4 or tuple(inputs.shape[1:]) != (channels, size, size):
        raise ValueError(f"{name} must have shape (B, {channels}, {size}, {size}) (channels-first); got {inputs.shape}.")
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
    object_patches : tf.Tensor of shape (B, C, N, N), complex64
        The patches that are illuminated: the group-canvas views when ``object_big`` and C > 1,
        otherwise the network's patches.
    predicted_amplitudes : tf.Tensor of shape (B, C, N, N), float32
        ``s * |fftshift(fft2(P_hat * O))| / N``.
    """
    if not isinstance(model, PhysicsModel):
        raise TypeError(f"forward_model needs the model from build_model; got {type(model).__name__}.")
    cfg = model.model_config
    channels = cfg.gridsize**2
    inputs = _as_inputs(inputs, channels, cfg.N)
    offsets = physics.to_tensor(offsets)
    if offsets.shape.rank != 3 or tuple(offsets.shape[1:]) != (channels, 2) or offsets.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"offsets must have shape ({inputs.shape[0]}, {channels}, 2) with last axis (x, y); got {offsets.shape}."
        )
    return model((inputs, offsets))


def _network_of(model_or_net):
    if isinstance(model_or_net, PhysicsModel):
        return model_or_net.net
    if isinstance(model_or_net, PtychoNet):
        return model_or_net
    raise TypeError(f"expected a PtychoNet or PhysicsModel from ptycholib.tensorflow; got {type(model_or_net).__name__}.")


def predict_object(model_or_net, inputs):
    """Return the network's complex object patches ``amplitude * exp(i * phase)``.

    Parameters
    ----------
    model_or_net : PhysicsModel or PtychoNet
    inputs : tensor or ndarray of shape (B, C, N, N), float32

    Returns
    -------
    tf.Tensor of shape (B, C, N, N), complex64
        Before any group-canvas merge (no offsets are involved).
    """
    net = _network_of(model_or_net)
    inputs = _as_inputs(inputs, net.n_channels, net.patch_size)
    amplitude, phase = net(inputs)
    return tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase))


def _canonical_variables(model_or_net):
    """Return ``{canonical name: (variable, kind)}`` with kind 'kernel', 'bias', 'scalar' or 'probe'."""
    net = _network_of(model_or_net)
    variables = {}
    for prefix, conv in net.convs.items():
        variables[f"{prefix}.weight"] = (conv.kernel, "kernel")
        variables[f"{prefix}.bias"] = (conv.bias, "bias")
    if isinstance(model_or_net, PhysicsModel):
        variables["physics.log_intensity_scale"] = (model_or_net.log_intensity_scale, "scalar")
        variables["physics.probe"] = ((model_or_net.probe_real, model_or_net.probe_imag), "probe")
    return variables


def _to_canonical(value, kind):
    if kind == "kernel":
        return np.ascontiguousarray(np.transpose(np.asarray(value), (3, 2, 0, 1)), dtype=np.float32)
    return np.asarray(value, dtype=np.float32)


def get_weights(model_or_net):
    """Export every parameter under its canonical name (docs/architecture.md).

    Parameters
    ----------
    model_or_net : PhysicsModel or PtychoNet

    Returns
    -------
    dict of str to ndarray
        float32 arrays, conv kernels ``(out, in, kh, kw)``, biases ``(out,)``; a PhysicsModel adds
        ``physics.log_intensity_scale`` (shape ``()``) and ``physics.probe`` ((N, N) complex64).
    """
    weights = {}
    for name, (variable, kind) in _canonical_variables(model_or_net).items():
        if kind == "probe":
            real, imag = (np.asarray(v.numpy(), dtype=np.float32) for v in variable)
            weights[name] = (real + 1j * imag).astype(np.complex64)
        else:
            weights[name] = _to_canonical(variable.numpy(), kind)
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
        Naming every missing or unexpected key, or the first key whose shape differs.
    """
    variables = _canonical_variables(model_or_net)
    check_same_keys(
        weights, variables, f"canonical weights do not match this {type(model_or_net).__name__}",
        hint="Build the model with the same ModelConfig (N, gridsize, n_filters_scale, pad_object, probe_big) "
        "that produced the weights.",
    )
    updates = []
    for name, (variable, kind) in variables.items():
        value = np.asarray(weights[name])
        if kind == "probe":
            expected = tuple(variable[0].shape)
        elif kind == "kernel":
            expected = tuple(variable.shape[i] for i in (3, 2, 0, 1))
        else:
            expected = tuple(variable.shape)
        if value.shape != expected:
            raise ValueError(f"weight {name!r} has shape {value.shape}; this model expects {expected}.")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"weight {name!r} contains NaN or Inf values.")
        updates.append((name, variable, kind, value))
    for name, variable, kind, value in updates:
        if kind == "probe":
            variable[0].assign(np.real(value).astype(np.float32))
            variable[1].assign(np.imag(value).astype(np.float32))
        elif kind == "kernel":
            variable.assign(np.transpose(value, (2, 3, 1, 0)).astype(np.float32))
        else:
            variable.assign(value.astype(np.float32))

