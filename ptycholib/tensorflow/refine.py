"""Physics refinement of an object canvas by gradient descent through the forward model (TensorFlow).

Same function, name and signature as ``ptycholib.torch.refine``; the NumPy front end
`ptycholib.refine.refine` plans the visiting order, the bilinear cut and the step rule, and documents
the mathematics. The object (and optionally the probe) is held as a pair of real variables, so the
gradient ``g = dL/dRe + i dL/dIm = 2 dL/dconj(O)`` has the same meaning in both frameworks.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ptycholib import refine as _reference

__all__ = ["refine_object"]


# ---------------------------------------------------------------------------------------------------
# The forward model of one batch of positions and its loss
# ---------------------------------------------------------------------------------------------------


def _cut(real, imag, index, weight):
    """Bilinear views ``(B, N, N)`` of the flat canvas pair, from the plan's 4 corners."""
    return tf.complex(tf.reduce_sum(tf.gather(real, index) * weight, axis=1),
                      tf.reduce_sum(tf.gather(imag, index) * weight, axis=1))


def _batch_loss(real, imag, probe_real, probe_imag, index, weight, target, loss):
    """Loss of one batch (`ptycholib.refine.batch_loss` is the NumPy reference) and the views."""
    views = _cut(real, imag, index, weight)
    exit_waves = tf.complex(probe_real, probe_imag) * views
    patch_size = target.shape[-1]
    predicted = tf.abs(tf.signal.fft2d(exit_waves)) / patch_size
    if loss == "amplitude":
        value = 0.5 * tf.reduce_sum((predicted - target) ** 2)
    else:
        value = 0.25 * tf.reduce_sum(predicted**2 - target**2 * tf.math.log(predicted**2 + _reference.POISSON_EPS))
    return value, views


def _scatter(values, index, weight, size):
    """Adjoint of `_cut` for a real ``(B, N, N)`` field: the flat canvas of accumulated weights."""
    return tf.math.unsorted_segment_sum(tf.reshape(weight * values[:, None], [-1]), tf.reshape(index, [-1]), size)


# ---------------------------------------------------------------------------------------------------
# The step rules
# ---------------------------------------------------------------------------------------------------


class _Adam:
    """Adam on a list of real variables, written out so both backends do the same arithmetic."""

    def __init__(self, tensors, step, betas=(0.9, 0.999), eps=1e-8):
        # The count is a variable (float64, like torch's Python-number corrections) so that a
        # tf.function step does not retrace on every update.
        self.step, self.betas, self.eps, self.count = step, betas, eps, tf.Variable(0.0, dtype=tf.float64)
        self.moments = [(tf.Variable(tf.zeros_like(t)), tf.Variable(tf.zeros_like(t))) for t in tensors]

    def update(self, tensors, gradients):
        self.count.assign_add(1.0)
        beta1, beta2 = self.betas
        for tensor, gradient, (first, second) in zip(tensors, gradients, self.moments):
            first.assign(beta1 * first + (1 - beta1) * gradient)
            second.assign(beta2 * second + (1 - beta2) * gradient**2)
            first_hat = first / tf.cast(1 - beta1**self.count, tf.float32)
            second_hat = second / tf.cast(1 - beta2**self.count, tf.float32)
            tensor.assign_sub(self.step * first_hat / (tf.sqrt(second_hat) + self.eps))


def _pie_denominator(intensity, alpha):
    """rPIE's preconditioner ``(1 - alpha) W + alpha max(W)``."""
    return (1 - alpha) * intensity + alpha * tf.reduce_max(intensity)


# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------


def refine_object(amplitudes, probe, initial_object, plan, options, *, on_iteration=None):
    """Refine an object canvas (and optionally the probe) through the far-field model.

    Parameters
    ----------
    amplitudes : ndarray of shape (M, N, N), float32
        Measured amplitudes, DC centred.
    probe : ndarray of shape (N, N), complex64
        Effective probe (already scaled to the data).
    initial_object : ndarray of shape (rows, cols), complex64
    plan : ptycholib.refine.RefinementPlan
        Visiting order and bilinear cut of every batch (NumPy, shared by both backends).
    options : ptycholib.refine.RefineOptions
    on_iteration : callable, optional
        Called as ``on_iteration(iteration, loss, get_object)`` after each sweep; ``get_object()``
        returns the canvas as a NumPy array (only called when needed).

    Returns
    -------
    obj : ndarray of shape (rows, cols), complex64
    probe : ndarray of shape (N, N), complex64
    losses : ndarray of shape (n_iterations,), float64
        The loss summed over each sweep's batches, before their updates.
    """
    shape = initial_object.shape
    size = shape[0] * shape[1]
    flat = np.ascontiguousarray(initial_object.reshape(-1))
    real = tf.Variable(flat.real, dtype=tf.float32)
    imag = tf.Variable(flat.imag, dtype=tf.float32)
    probe_real = tf.Variable(probe.real, dtype=tf.float32, trainable=options.probe_trainable)
    probe_imag = tf.Variable(probe.imag, dtype=tf.float32, trainable=options.probe_trainable)
    target = tf.convert_to_tensor(np.ascontiguousarray(amplitudes, dtype=np.float32))
    trained = [real, imag] + ([probe_real, probe_imag] if options.probe_trainable else [])
    adam = _Adam(trained, options.step) if options.optimizer == "adam" else None
    losses = np.zeros(plan.n_iterations)

    patch_size = amplitudes.shape[-1]
    batch_spec = [tf.TensorSpec([None, 4, patch_size, patch_size], tf.int64),
                  tf.TensorSpec([None, 4, patch_size, patch_size], tf.float32),
                  tf.TensorSpec([None, patch_size, patch_size], tf.float32)]

    # One graph for every batch size (the last batch may be smaller): 2.2x faster than eager
    # (1.0 against 2.3 s per sweep of 900 positions at N = 64, one thread).
    @tf.function(input_signature=batch_spec)
    def step(index, weight, measured):
        """One update from one batch; returns the batch's loss before it."""
        with tf.GradientTape() as tape:
            value, views = _batch_loss(real, imag, probe_real, probe_imag, index, weight, measured, options.loss)
        gradients = [tf.convert_to_tensor(g) for g in tape.gradient(value, trained)]  # gathers give IndexedSlices
        if adam is not None:
            adam.update(trained, gradients)
        else:
            probe_intensity = tf.broadcast_to(probe_real**2 + probe_imag**2, tf.shape(views))
            denominator = _pie_denominator(_scatter(probe_intensity, index, weight, size), options.alpha)
            real.assign_sub(options.step * gradients[0] / denominator)
            imag.assign_sub(options.step * gradients[1] / denominator)
            if options.probe_trainable:
                object_intensity = tf.reduce_sum(tf.math.real(views) ** 2 + tf.math.imag(views) ** 2, axis=0)
                probe_denominator = _pie_denominator(object_intensity, options.alpha)
                probe_real.assign_sub(options.probe_step * gradients[2] / probe_denominator)
                probe_imag.assign_sub(options.probe_step * gradients[3] / probe_denominator)
        return value

    for iteration in range(plan.n_iterations):
        for batch in plan.batches(iteration):
            losses[iteration] += float(step(tf.convert_to_tensor(batch.index), tf.convert_to_tensor(batch.weight),
                                            tf.gather(target, batch.positions)))
        if on_iteration is not None:
            on_iteration(iteration, losses[iteration], lambda: _object(real, imag, shape))
    return _object(real, imag, shape), _probe(probe_real, probe_imag), losses


def _object(real, imag, shape):
    return tf.complex(real, imag).numpy().reshape(shape).astype(np.complex64)


def _probe(probe_real, probe_imag):
    return tf.complex(probe_real, probe_imag).numpy().astype(np.complex64)
