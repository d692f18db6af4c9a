"""SPEC 8's last row at the main job's size: both backends trained from the same start score alike.

Notebook 05's trained-model comparison: one object per group (``object_big=False``, issue 11) and a
cosine learning-rate schedule, so that the schedule is part of what both backends must agree on.
"""

import pytest

from ptycholib import metrics, parity, simulate, workflow
from ptycholib.archive import ModelArchive
from ptycholib.backends import is_available
from ptycholib.config import Config, apply_overrides

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parity,
    pytest.mark.skipif(not (is_available("torch") and is_available("tensorflow")), reason="needs both backends"),
]

MARGIN = 0.15  # SSIM a trained model must gain over a constant object and over its own untrained start


def test_trained_model_parity():
    # notebook 02's default data and notebook 05's default training (1024 groups x 8 epochs, float32)
    train, test = simulate.simulate_train_test(n_train=2500, n_test=900, object_kind="lines", probe_kind="fzp",
                                               patch_size=64, nphotons=1e9, step_px=4.0, seed=0)
    cfg = apply_overrides(Config(), {"gridsize": 2, "n_filters_scale": 1, "n_groups": 1024, "nepochs": 8, "seed": 0,
                                     "object_big": False, "lr_schedule": "cosine"})
    result = parity.compare_training(train, test, cfg)
    for row in result.rows:
        assert row.passed, row
    assert [h["learning_rate"] for h in result.histories["torch"]] == pytest.approx(
        [h["learning_rate"] for h in result.histories["tensorflow"]], rel=1e-6)
    assert result.histories["torch"][-1]["learning_rate"] < 0.5 * cfg.training.learning_rate  # the schedule ran

    backend, model, _, input_scale = workflow.prepare_training(train, cfg)  # the common untrained start
    untrained = ModelArchive(config=cfg, weights=backend.network.get_weights(model), input_scale=input_scale,
                             backend=backend.name)
    recon = workflow.reconstruct(untrained, test)
    floor = max(workflow.evaluate(recon, test)["amplitude_ssim"],
                metrics.constant_object_baseline(test.obj, mask=recon.region)["amplitude_ssim"])
    for name in ("torch", "tensorflow"):
        assert result.scores[name]["amplitude_ssim"] > floor + MARGIN, (name, result.scores[name]["amplitude_ssim"], floor)
