"""ptycholib.plotting: every helper returns a Figure (headless) with the panels it promises."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from ptycholib import batching, config, grouping, plotting  # noqa: E402


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_image_helpers(tiny_dataset, tmp_path):
    obj, probe = tiny_dataset.obj, tiny_dataset.probe
    fig = plotting.complex_images([obj, probe], ["object", "probe"], phase_threshold=0.05)
    assert isinstance(fig, Figure) and len(_image_axes(fig)) == 4
    fig = plotting.diffraction_patterns(list(tiny_dataset.amplitudes[:3] ** 2), ["a", "b", "c"], ncols=2)
    assert len(_image_axes(fig)) == 3
    fig.savefig(tmp_path / "patterns.png")
    assert (tmp_path / "patterns.png").stat().st_size > 0


def test_scan_and_group_figures(tiny_dataset):
    data = tiny_dataset
    fig = plotting.scan_figure([(data.x_px, data.y_px)] * 2, ["a", "b"], backgrounds=[np.abs(data.obj), None],
                               probe_diameter_px=20)  # fmt: skip
    assert len(fig.axes) == 2 and fig.axes[0].patches
    groups = grouping.group_neighbors(data.x_px, data.y_px, 2, neighbor_count=6, seed=0)
    fig = plotting.group_figure(data.obj, data.x_px, data.y_px, groups.indices[5], groups.offsets[5], data.patch_size)
    assert len(fig.axes[0].patches) == 4


def test_training_figures(tiny_dataset):
    plan = batching.epoch_plan(config.apply_overrides(config.Config(), {"nepochs": 5}).training)
    assert len(plotting.schedule(plan).axes) == 2
    history = [{"epoch": i, "loss": 1.0 / (i + 1), "val_loss": None} for i in range(4)]
    assert plotting.loss_curves({"run": history}).axes[0].get_yscale() == "log"
    truth = tiny_dataset.obj
    mask = np.zeros(truth.shape, bool)
    mask[20:80, 20:100] = True
    fig = plotting.compare_objects(truth, {"recon": truth * 2j}, mask=mask)
    amplitude = fig.axes[0].images[0].get_array()
    assert len(_image_axes(fig)) == 4 and np.isnan(np.asarray(amplitude, dtype=float)[0, 0])


def test_parity_ratios_log_axis_pass_line_and_exact_floor():
    from ptycholib.parity import ParityRow

    rows = [ParityRow("config", "round trip", 0.0, 0.0), ParityRow("network", "a", 2e-7, 1e-4),
            ParityRow("network", "b", 5e-5, 1e-4), {"stage": "trained models", "measured": 3.0, "target": 1.0},
            ParityRow("gradients", "nan", float("nan"), 1e-3)]
    fig = plotting.parity_ratios(rows)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in ax.lines)  # the pass line
    assert [t.get_text() for t in ax.get_xticklabels()] == ["config", "network", "trained models", "gradients"]
    passed, failed = (np.asarray(c.get_offsets()) for c in ax.collections)
    assert len(passed) == 3 and len(failed) == 2
    np.testing.assert_allclose(sorted(passed[:, 1])[1:], [2e-3, 0.5])
    floor = sorted(passed[:, 1])[0]
    assert 0 < floor < 2e-3 and np.all(failed[:, 1] > 1) and np.all(np.isfinite(failed))
    with pytest.raises(ValueError, match="at least one row"):
        plotting.parity_ratios([])


def test_loss_curves_show_the_deviance_on_a_log_axis_when_the_history_has_it():
    nan = float("nan")
    history = [{"epoch": i, "loss": -3.4e6 - i, "val_loss": -3.2e6 - i, "deviance": 10.0 / (i + 1),
                "val_deviance": 12.0 / (i + 1)} for i in range(4)]
    ax = plotting.loss_curves({"run": history}).axes[0]
    assert ax.get_yscale() == "log" and "deviance" in ax.get_ylabel()
    assert [line.get_label() for line in ax.get_lines()] == ["run: train", "run: validation", "noise floor (about 1)"]
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), [12.0, 6.0, 4.0, 3.0])
    supervised = [dict(record, deviance=nan, val_deviance=nan) for record in history]  # no data fit: the raw loss
    ax = plotting.loss_curves({"pinn": history, "supervised": supervised}).axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "loss"
    with pytest.raises(ValueError, match="no record has 'learning_rat'"):
        plotting.loss_curves({"run": history}, metric="learning_rat")
