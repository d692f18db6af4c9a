"""SPEC 8's last row at the main job's size: both backends trained from the same start score alike."""

import pytest

from ptycholib import parity, simulate
from ptycholib.backends import is_available
from ptycholib.config import Config, apply_overrides

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parity,
    pytest.mark.skipif(not (is_available("torch") and is_available("tensorflow")), reason="needs both backends"),
]


def test_trained_model_parity():
    # notebook 02's default data and notebook 05's default training (1024 groups x 8 epochs, float32)
    train, test = simulate.simulate_train_test(n_train=2500, n_test=900, object_kind="lines", probe_kind="fzp",
                                               patch_size=64, nphotons=1e9, step_px=4.0, seed=0)
    cfg = apply_overrides(Config(), {"gridsize": 2, "n_filters_scale": 1, "n_groups": 1024, "nepochs": 8, "seed": 0})
    result = parity.compare_training(train, test, cfg)
    for row in result.rows:
        assert row.passed, row
    assert min(result.scores[b]["amplitude_ssim"] for b in ("torch", "tensorflow")) > 0.3
