"""Physics refinement of an object canvas by gradient descent through the forward model (torch).

Same function, name and signature as ``ptycholib.tensorflow.refine``; the NumPy front end
`ptycholib.refine.refine` plans the visiting order, the bilinear cut and the step rule, and documents
the mathematics. The object (and optionally the probe) is held as a pair of real tensors, so the
gradient ``g = dL/dRe + i dL/dIm = 2 dL/dconj(O)`` has the same meaning in both frameworks.
"""

from __future__ import annotations

import numpy as np
import torch

from ptycholib import refine as _reference

__all__ = ["refine_object"]


# ---------------------------------------------------------------------------------------------------
# The forward model of one batch of positions and its loss
# ---------------------------------------------------------------------------------------------------


def _cut(real, imag, index, weight):
    """Bilinear views ``(B, N, N)`` of the flat canvas pair, from the plan's 4 corners."""
    flat = index.reshape(-1)  # index_select: its backward (index_add_) is faster than advanced indexing's
    return torch.complex((real.index_select(0, flat).view(index.shape) * weight).sum(dim=1),
                         (imag.index_select(0, flat).view(index.shape) * weight).sum(dim=1))


def _batch_loss(real, imag, probe_real, probe_imag, index, weight, target, loss):
    """Loss of one batch (`ptycholib.refine.batch_loss` is the NumPy reference) and the views."""
    views = _cut(real, imag, index, weight)
    exit_waves = torch.complex(probe_real, probe_imag) * views
    patch_size = target.shape[-1]
    predicted = torch.abs(torch.fft.fft2(exit_waves)) / patch_size
    if loss == "amplitude":
        value = 0.5 * ((predicted - target) ** 2).sum()
    else:
        value = 0.25 * (predicted**2 - target**2 * torch.log(predicted**2 + _reference.POISSON_EPS)).sum()
    return value, views


def _scatter(values, index, weight, size):
    """Adjoint of `_cut` for a real ``(B, N, N)`` field: the flat canvas of accumulated weights."""
    out = torch.zeros(size, dtype=values.dtype)
    out.index_add_(0, index.reshape(-1), (weight * values[:, None]).reshape(-1))
    return out


# ---------------------------------------------------------------------------------------------------
# The step rules
# ---------------------------------------------------------------------------------------------------


class _Adam:
    """Adam on a list of real tensors, written out so both backends do the same arithmetic."""

    def __init__(self, tensors, step, betas=(0.9, 0.999), eps=1e-8):
        self.step, self.betas, self.eps, self.count = step, betas, eps, 0
        self.moments = [(torch.zeros_like(t), torch.zeros_like(t)) for t in tensors]

    def update(self, tensors, gradients):
        self.count += 1
        beta1, beta2 = self.betas
        for tensor, gradient, (first, second) in zip(tensors, gradients, self.moments):
            first.mul_(beta1).add_((1 - beta1) * gradient)
            second.mul_(beta2).add_((1 - beta2) * gradient**2)
            first_hat = first / (1 - beta1**self.count)
            second_hat = second / (1 - beta2**self.count)
            tensor.sub_(self.step * first_hat / (torch.sqrt(second_hat) + self.eps))


def _pie_denominator(intensity, alpha):
    """rPIE's preconditioner ``(1 - alpha) W + alpha max(W)``."""
    return (1 - alpha) * intensity + alpha * intensity.max()


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
    real = torch.tensor(flat.real, dtype=torch.float32, requires_grad=True)
    imag = torch.tensor(flat.imag, dtype=torch.float32, requires_grad=True)
    probe_real = torch.tensor(probe.real, dtype=torch.float32, requires_grad=options.probe_trainable)
    probe_imag = torch.tensor(probe.imag, dtype=torch.float32, requires_grad=options.probe_trainable)
    target = torch.from_numpy(np.ascontiguousarray(amplitudes, dtype=np.float32))
    trained = [real, imag] + ([probe_real, probe_imag] if options.probe_trainable else [])
    adam = _Adam(trained, options.step) if options.optimizer == "adam" else None
    losses = np.zeros(plan.n_iterations)

    def step(index, weight, measured):
        """One update from one batch; returns the batch's loss before it."""
        value, views = _batch_loss(real, imag, probe_real, probe_imag, index, weight, measured, options.loss)
        gradients = torch.autograd.grad(value, trained)
        with torch.no_grad():
            if adam is not None:
                adam.update(trained, gradients)
            else:
                probe_intensity = (probe_real**2 + probe_imag**2).expand_as(views)
                denominator = _pie_denominator(_scatter(probe_intensity, index, weight, size), options.alpha)
                real.sub_(options.step * gradients[0] / denominator)
                imag.sub_(options.step * gradients[1] / denominator)
                if options.probe_trainable:
                    object_intensity = (views.real**2 + views.imag**2).sum(dim=0)
                    probe_denominator = _pie_denominator(object_intensity, options.alpha)
                    probe_real.sub_(options.probe_step * gradients[2] / probe_denominator)
                    probe_imag.sub_(options.probe_step * gradients[3] / probe_denominator)
        return value.detach()

    for iteration in range(plan.n_iterations):
        for batch in plan.batches(iteration):
            losses[iteration] += float(step(torch.from_numpy(batch.index), torch.from_numpy(batch.weight),
                                            target[batch.positions]))
        if on_iteration is not None:
            on_iteration(iteration, losses[iteration], lambda: _object(real, imag, shape))
    return _object(real, imag, shape), _probe(probe_real, probe_imag), losses


def _object(real, imag, shape):
    return torch.complex(real.detach(), imag.detach()).numpy().reshape(shape).astype(np.complex64)


def _probe(probe_real, probe_imag):
    return torch.complex(probe_real.detach(), probe_imag.detach()).numpy().astype(np.complex64)
