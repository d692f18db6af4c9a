"""The PtychoPINN network and the physics-informed model in Keras 3 (docs/architecture.md).

Layer attribute names are the canonical weight names (``encoder.0.conv1.weight``), and
`get_weights` / `set_weights` exchange a dict of them with float32 arrays, conv kernels
``(out, in, kh, kw)``, with the other backend and the model archive. Layout is channels-first at the
boundary; inside, the network runs channels-last (TensorFlow's CPU convolutions and pooling want
NHWC). ``ptycholib.torch.network`` is the same text in PyTorch.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from .. import archive, forward
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


# --------------------------------------------------------------------------------------------------
# building blocks


def _phase_activation(x):
    return math.pi * tf.tanh(x)


def _complex(amplitude, phase):
    """``amplitude * exp(i * phase)``; amplitude may be negative (swish head), so not a polar form."""
    return tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase))


def _conv(width_in, width_out):
    """3x3 convolution, "same" zero padding, with bias (built, so its weights exist)."""
    conv = keras.layers.Conv2D(width_out, 3, padding="same", kernel_initializer="glorot_uniform", bias_initializer="zeros")
    conv.build((None, None, None, width_in))
    return conv


def _narrow_conv(conv, x):
    """``conv(x)`` for the heads' 3x3 convolutions with one output channel.

    The twin of torch's helper, which replaces oneDNN's slow 1-output-channel convolution by a matrix
    product and shifted sums at inference; here Keras's convolution is used as is (TensorFlow runs
    these layers through its own fused kernels, and the predict path is one compiled graph).
    """
    return conv(x)


def _pool(x):
    """2x2 max-pooling, stride 2."""
    return tf.nn.max_pool2d(x, 2, 2, "VALID")


def _upsample(x):
    """Nearest-neighbour x2 upsampling of NHWC tensors (a broadcast, so its gradient is a sum)."""
    shape = tf.shape(x)
    doubled = tf.broadcast_to(x[:, :, None, :, None, :], [shape[0], shape[1], 2, shape[2], 2, shape[3]])
    return tf.reshape(doubled, [shape[0], 2 * shape[1], 2 * shape[2], shape[3]])


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


class _ConvPair(keras.layers.Layer):
    """conv -> ReLU -> conv -> ReLU -> ``resample``: ConvPool (`_pool`) or ConvUp (`_upsample`)."""

    def __init__(self, width_in, width, resample):
        super().__init__()
        self.conv0 = _conv(width_in, width)
        self.conv1 = _conv(width, width)
        self.resample = resample
        self.built = True

    def call(self, x):
        return self.resample(tf.nn.relu(self.conv1(tf.nn.relu(self.conv0(x)))))


class _UpBranch(_ConvPair):
    """ConvUp(width_in, width) -> conv(width, channels): the outer-ring and full-size heads."""

    def __init__(self, width_in, width, channels):
        super().__init__(width_in, width, _upsample)
        self.out = _conv(width, channels)

    def call(self, x):
        return _narrow_conv(self.out, super().call(x))


class _Head(keras.layers.Layer):
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
            self.border = tf.constant(border[:, :, None])
        else:
            self.full = _UpBranch(features, 32 * scale, channels)
        self.built = True

    def call(self, features):
        # Activations and everything after them run in float32 (convolutions may compute in bfloat16).
        if not self.pad_object:
            return self.activation(tf.cast(self.full(features), tf.float32))
        q = self.quarter
        out = tf.pad(self.activation(tf.cast(_narrow_conv(self.center, features[..., :-4]), tf.float32)), [[0, 0], [q, q], [q, q], [0, 0]])
        if self.outer is not None:
            out = out + self.activation(tf.cast(self.outer(features[..., -4:]), tf.float32)) * self.border
        return out


# --------------------------------------------------------------------------------------------------
# the network and the physics-informed model


class PtychoNet(keras.Model):
    """PtychoPINN's encoder and amplitude/phase decoders (no physics).

    Parameters
    ----------
    model_config : ptycholib.config.ModelConfig
        Uses ``N``, ``gridsize``, ``n_filters_scale``, ``amp_activation``, ``pad_object``, ``probe_big``.

    Notes
    -----
    ``net(inputs)`` maps normalised amplitudes ``(B, C, N, N)`` float32 to ``(amplitude, phase)``,
    each ``(B, K, N, N)`` float32 (``K = model_config.n_object_channels``). Groups never mix
    (SPEC 4.7). Inside, the layers run channels-last (``(B, H, W, C)``) and every layer is built
    here from known widths (no symbolic trace on the first call); shapes and weight layouts at the
    boundary stay ``(B, C, H, W)`` / ``(out, in, kh, kw)``.
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
        self.encoder = [_ConvPair(width_in, width, _pool) for width_in, width in pairs]
        pairs = list(zip(encoder[-1:] + decoder[:-1], decoder))
        self.decoder_amp = [_ConvPair(width_in, width, _upsample) for width_in, width in pairs]
        self.decoder_phase = [_ConvPair(width_in, width, _upsample) for width_in, width in pairs]
        options = dict(pad_object=model_config.pad_object, probe_big=model_config.probe_big)
        head = (decoder[-1], model_config.n_object_channels, scale, size)
        self.head_amp = _Head(*head, activation=_ACTIVATIONS[model_config.amp_activation], **options)
        self.head_phase = _Head(*head, activation=_phase_activation, **options)
        self.built = True

    def call(self, inputs):
        bottleneck = _chain(self.encoder, tf.transpose(tf.cast(inputs, tf.float32), [0, 2, 3, 1]))
        amplitude = self.head_amp(_chain(self.decoder_amp, bottleneck))
        phase = self.head_phase(_chain(self.decoder_phase, bottleneck))
        return tf.transpose(amplitude, [0, 3, 1, 2]), tf.transpose(phase, [0, 3, 1, 2])


class _PhysicsParameters(keras.layers.Layer):
    """``log_intensity_scale`` (scalar) and ``probe`` (real ``(N, N, 2)``: real and imaginary parts)."""

    def __init__(self, probe, intensity_scale):
        super().__init__()
        # Created trainable so that TensorFlow records their gradients; Keras's flag (set below and
        # by training.train) decides whether the optimiser updates them.
        self.log_intensity_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(float(np.log(intensity_scale))), name="log_intensity_scale"
        )
        parts = np.stack([probe.real, probe.imag], axis=-1).astype(np.float32)
        self.probe = self.add_weight(shape=parts.shape, initializer=keras.initializers.Constant(parts), name="probe")
        self.probe.trainable = False
        self.built = True


class PhysicsModel(keras.Model):
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
    the network's patches through `ptycholib.tensorflow.physics.forward_model`. ``model.physics``
    holds the variables ``physics.log_intensity_scale`` and ``physics.probe``, a real ``(N, N, 2)``
    array (so Adam treats it as torch does a complex parameter, as a pair of reals). At build time
    the probe is frozen and ``log s`` trains (the TrainingConfig defaults);
    `ptycholib.tensorflow.training.train` applies the configured ``probe_trainable`` /
    ``intensity_scale_trainable`` and each stage's settings.
    """

    def __init__(self, model_config, probe, intensity_scale):
        super().__init__()
        probe = forward.check_physics_inputs(model_config, probe, intensity_scale)
        self.model_config = model_config
        self.net = PtychoNet(model_config)
        self.physics = _PhysicsParameters(probe, intensity_scale)
        window = forward.window_weights(model_config.N, pad_object=model_config.pad_object, probe_big=model_config.probe_big)
        self.window = tf.constant(window)
        self.built = True

    @property
    def probe(self):
        """The probe as a complex64 tensor ``(N, N)`` (a differentiable view of the variable)."""
        return tf.complex(self.physics.probe[..., 0], self.physics.probe[..., 1])

    @property
    def intensity_scale(self):
        """SPEC's ``s = exp(log_intensity_scale)`` as a scalar tensor."""
        return tf.exp(self.physics.log_intensity_scale)

    def call(self, inputs, offsets):
        amplitude, phase = self.net(inputs)
        # The network's heads return float32, so physics is float32 under a mixed-precision policy too.
        steps = physics.forward_model(
            self.model_config, _complex(amplitude, phase), offsets, self.probe,
            self.intensity_scale, window=self.window,
        )
        return steps["views"], steps["amplitudes"]


# --------------------------------------------------------------------------------------------------
# construction


def _glorot_init(net, seed):
    """Draw Glorot-uniform kernels from ``np.random.default_rng(seed)`` and zero the biases."""
    if seed is None:  # Keras drew Glorot-uniform kernels and zero biases when it built the layers
        return
    rng = np.random.default_rng(int(seed))
    convs = _named_convs(net)
    # Layers in the order of `ptycholib.archive.canonical_shapes`, which fixes the draws of a seed.
    for name in archive.canonical_shapes(net.model_config):
        if name.endswith(".weight"):
            conv = convs[name.removesuffix(".weight")]
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
        trainable; `ptycholib.tensorflow.training.train` applies the TrainingConfig.
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
    """``inputs`` as a float32 tensor, shape checked."""
    inputs = physics.to_tensor(inputs)
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
    offsets = physics.to_tensor(offsets)
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
    return _complex(amplitude, phase)


# --------------------------------------------------------------------------------------------------
# canonical weights


def _named_convs(net):
    """``{canonical prefix: convolution}`` of a PtychoNet, e.g. ``encoder.0.conv1`` (attribute paths)."""
    convs = {}

    def visit(value, path):
        if isinstance(value, keras.layers.Conv2D):
            convs[path] = value
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit(item, f"{path}.{index}")
        elif isinstance(value, (_ConvPair, _Head)):
            for name, item in vars(value).items():
                if not name.startswith("_"):  # Keras's own bookkeeping
                    visit(item, f"{path}.{name}")

    for name in ("encoder", "decoder_amp", "decoder_phase", "head_amp", "head_phase"):
        visit(getattr(net, name), name)
    return convs


def _canonical_parameters(model_or_net):
    """Return ``{canonical name: variable}``; the probe variable is real ``(N, N, 2)``."""
    parameters = {}
    for prefix, conv in _named_convs(_network_of(model_or_net)).items():
        parameters[f"{prefix}.weight"] = conv.kernel
        parameters[f"{prefix}.bias"] = conv.bias
    if isinstance(model_or_net, PhysicsModel):
        parameters["physics.log_intensity_scale"] = model_or_net.physics.log_intensity_scale
        parameters["physics.probe"] = model_or_net.physics.probe
    return parameters


def _to_canonical(name, value):
    """A parameter's (or gradient's) NumPy value in the canonical layout: a float32 copy, the probe complex64."""
    if name == "physics.probe":
        return (value[..., 0] + 1j * value[..., 1]).astype(np.complex64)
    if name.endswith(".weight"):  # Keras kernels are (kh, kw, in, out)
        value = np.transpose(value, (3, 2, 0, 1))
    return np.array(value, dtype=np.float32, order="C")


def _from_canonical(name, value):
    """The inverse of `_to_canonical`: a float32 array in the parameter's layout."""
    if name == "physics.probe":
        value = np.stack([np.real(value), np.imag(value)], axis=-1)
    if name.endswith(".weight"):
        value = np.transpose(value, (2, 3, 1, 0))
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
    for parameter, value in updates:
        parameter.assign(value)
