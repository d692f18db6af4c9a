"""Inference fast paths (issue 15): batch size for throughput, bfloat16 inference, both backends.

The fast path (`predict_patches`: torch.inference_mode / a compiled tf.function, automatic batch
size) must equal the plain eager forward pass within 1e-5 in float32, and bfloat16 inference must
change the reconstruction's amplitude SSIM by less than 0.005.
"""

import dataclasses

import numpy as np
import pytest

from ptycholib import workflow
from ptycholib.backends import BACKENDS, is_available
from ptycholib.config import Config, ConfigError, InferenceConfig, ModelConfig, apply_overrides

AVAILABLE = [b for b in BACKENDS if is_available(b)]


@pytest.fixture(scope="module", params=AVAILABLE)
def trained(request, tiny_train_test):
    train, _ = tiny_train_test
    config = apply_overrides(Config(), {"backend": request.param, "gridsize": 2, "n_filters_scale": 1, "n_groups": 16,
                                        "nepochs": 1, "batch_size": 8, "validation_fraction": 0.0, "logger": "none"})
    return workflow.train_model(train, config, progress=False).archive


def _plain_patches(backend, model, inputs, offsets):
    """The eager forward pass, one call, no inference mode, no compiled function."""
    if backend.name == "torch":
        import torch

        with torch.no_grad():
            return backend.physics.to_numpy(backend.network.forward_model(model, inputs, offsets)[0])
    return backend.physics.to_numpy(backend.network.forward_model(model, inputs, offsets)[0])


def test_fast_path_equals_plain_forward_pass_in_float32(trained, tiny_train_test):
    _, test = tiny_train_test
    backend, model = workflow.build_backend_model(trained)
    groups = workflow.inference_groups(test, trained.config.model, trained.config.training.neighbor_count)
    grouped = workflow.group_data(test, groups, trained.input_scale)
    batch = workflow.inference_batch_size(trained.config.model)
    assert batch < len(grouped.inputs)  # several batches, the last one partial
    fast = backend.training.predict_patches(model, grouped.inputs, grouped.offsets, batch_size=batch)
    plain = _plain_patches(backend, model, grouped.inputs, grouped.offsets)
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-5)


def test_bfloat16_changes_amplitude_ssim_by_less_than_0_005(trained, tiny_train_test):
    _, test = tiny_train_test
    scores = {}
    for precision in ("float32", "bfloat16"):
        inference = dataclasses.replace(trained.config.inference, precision=precision)
        recon = workflow.reconstruct(trained, test, inference=inference)
        scores[precision] = workflow.evaluate(recon, test, max_shift_px=None)["amplitude_ssim"]
        if precision == "bfloat16":
            assert recon.obj.dtype == np.complex64 and np.all(np.isfinite(recon.obj))
            assert not np.array_equal(recon.obj, reference.obj)  # it did run in bfloat16
        reference = recon
    assert abs(scores["bfloat16"] - scores["float32"]) < 0.005


def test_predict_patches_rejects_unknown_precision(trained, tiny_train_test):
    _, test = tiny_train_test
    backend, model = workflow.build_backend_model(trained)
    inputs = np.zeros((1, 4, 64, 64), np.float32)
    with pytest.raises(ValueError, match="precision='float16' is not supported"):
        backend.training.predict_patches(model, inputs, np.zeros((1, 4, 2)), batch_size=1, precision="float16")


def test_inference_config_precision_and_automatic_batch_size():
    assert InferenceConfig().precision == "float32" and InferenceConfig().batch_size == 0
    assert apply_overrides(Config(), ["inference.precision=bfloat16"]).inference.precision == "bfloat16"
    with pytest.raises(ConfigError, match="inference.precision='bf16' is not supported"):
        InferenceConfig(precision="bf16")
    with pytest.raises(ConfigError, match="must be an integer >= 0"):
        InferenceConfig(batch_size=-1)
    # about 32 / n_filters_scale patterns per call, at least one group; an explicit size wins
    assert workflow.inference_batch_size(ModelConfig(gridsize=1, n_filters_scale=2)) == 16
    assert workflow.inference_batch_size(ModelConfig(gridsize=2, n_filters_scale=1)) == 8
    assert workflow.inference_batch_size(ModelConfig(gridsize=3, n_filters_scale=4)) == 1
    assert workflow.inference_batch_size(ModelConfig(gridsize=2), 100) == 100


@pytest.mark.skipif(not is_available("torch"), reason="needs torch")
def test_torch_batches_over_threads_equal_a_serial_pass(tiny_train_test):
    import torch

    from ptycholib.torch import network, training

    _, test = tiny_train_test
    config = ModelConfig(gridsize=2, n_filters_scale=1)
    model = network.build_model(config, test.probe, 100.0, seed=0)
    rng = np.random.default_rng(0)
    inputs, offsets = rng.random((7, 4, 64, 64), dtype=np.float32), rng.uniform(-2, 2, (7, 4, 2))
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = training.predict_patches(model, inputs, offsets, batch_size=2)
        torch.set_num_threads(2)
        pooled = training.predict_patches(model, inputs, offsets, batch_size=2)
        assert torch.get_num_threads() == 2  # restored after the worker threads
    finally:
        torch.set_num_threads(saved)
    np.testing.assert_array_equal(pooled, serial)


@pytest.mark.skipif(not is_available("torch"), reason="needs torch")
def test_torch_one_channel_head_convolution_fast_path():
    import torch

    from ptycholib.torch import network

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(60, 1, 3, padding=1)
    x = torch.randn(3, 60, 17, 23).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        plain = conv(x)
        fast = network._narrow_conv(conv, x)
    assert fast.shape == plain.shape
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
    assert not torch.equal(fast, plain)  # the matrix-product path ran (another summation order)
    assert torch.equal(network._narrow_conv(conv, x), conv(x))  # with autograd on: the convolution itself
