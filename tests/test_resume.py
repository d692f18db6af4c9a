"""Resuming an interrupted run, and the non-finite guard (issue 16, items 4 and 5), in both backends.

A run interrupted after epoch k (an exception raised by the epoch callback, so that the checkpoint of
epoch k-1 is the last one written, as after a kill) and resumed with ``resume=True`` must end with the
weights of an uninterrupted run.
"""

import importlib
import json
import os

import numpy as np
import pytest

from ptycholib.batching import NonFiniteLossError
from ptycholib.config import Stage, TrainingConfig

from tests.backends.test_training import build, make_groups

EPOCHS = 4


@pytest.fixture(params=["torch", "tensorflow"])
def backend(request):
    pytest.importorskip(request.param)
    return importlib.import_module(f"ptycholib.{request.param}")


class _Interrupt(Exception):
    pass


def _config(**options):
    # Two stages, a plateau schedule and a validation split: every piece of state a resume restores.
    options = {
        "batch_size": 3, "nepochs": EPOCHS, "learning_rate": 1e-3, "validation_fraction": 0.25, "logger": "none",
        "lr_schedule": "plateau", "lr_plateau_patience": 1, "lr_plateau_factor": 0.5,
        "stages": (Stage(epochs=2), Stage(epochs=2, freeze_encoder=True, learning_rate_factor=0.5)),
        **options,
    }
    return TrainingConfig(**options)


def _run(backend, groups, config, log_dir, *, stop_at=None, resume=False):
    inputs, offsets, amplitudes = groups[:3]
    model = build(backend, groups)

    def callback(record):
        if stop_at is not None and record["epoch"] == stop_at:
            raise _Interrupt

    history = backend.training.train(model, inputs, offsets, amplitudes, config, log_dir=log_dir, progress=False,
                                      callback=callback, resume=resume)
    return backend.network.get_weights(model), history


def test_resumed_run_ends_with_the_uninterrupted_weights(backend, tmp_path):
    groups = make_groups(n_groups=8)
    config = _config()
    straight, straight_history = _run(backend, groups, config, tmp_path / "straight")
    with pytest.raises(_Interrupt):
        _run(backend, groups, config, tmp_path / "cut", stop_at=2)  # epochs 0 and 1 complete
    resumed, history = _run(backend, groups, config, tmp_path / "cut", resume=True)
    assert [r["epoch"] for r in history] == list(range(EPOCHS))
    for a, b in zip(straight_history, history):
        assert a["learning_rate"] == pytest.approx(b["learning_rate"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for name in straight:
        np.testing.assert_allclose(resumed[name], straight[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_resume_without_checkpoints_is_one_clear_error(backend, tmp_path):
    with pytest.raises(ValueError, match="nothing to resume"):
        _run(backend, make_groups(n_groups=4), _config(validation_fraction=0.0), tmp_path / "empty", resume=True)


class _Payload:
    def __reduce__(self):
        return (print, ("this code ran",))


def test_damaged_or_hostile_checkpoints_are_refused(backend, tmp_path, capsys):
    import pickle

    groups, config = make_groups(n_groups=6), _config(nepochs=1, stages=(), validation_fraction=0.0)
    _run(backend, groups, config, tmp_path)
    if backend.__name__.endswith("torch"):
        (tmp_path / "checkpoints" / "last.ckpt").write_bytes(pickle.dumps({"state_dict": _Payload()}))
    else:
        path = tmp_path / "backup" / "latest.weights.h5"
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read"):
        _run(backend, groups, config, tmp_path, resume=True)
    assert "this code ran" not in capsys.readouterr().out


def test_checkpoints_hold_no_arbitrary_pickles(tmp_path):
    pytest.importorskip("torch")
    import torch

    backend = importlib.import_module("ptycholib.torch")
    _run(backend, make_groups(n_groups=6), _config(nepochs=1, stages=()), tmp_path)
    checkpoints = list((tmp_path / "checkpoints").glob("*.ckpt"))
    assert checkpoints
    for path in checkpoints:
        torch.load(path, weights_only=True)  # the restricted unpickler: tensors and plain values only


def test_keras_backup_is_hdf5_and_json(tmp_path):
    pytest.importorskip("tensorflow")
    backend = importlib.import_module("ptycholib.tensorflow")
    _run(backend, make_groups(n_groups=6), _config(nepochs=1, stages=()), tmp_path)
    names = sorted(os.listdir(tmp_path / "backup"))
    assert names == ["latest.weights.h5", "state.json", "training_metadata.json"]
    assert json.loads((tmp_path / "backup" / "state.json").read_text())["epoch"] == 1


def test_nonfinite_loss_stops_with_epoch_and_batch(backend, tmp_path):
    groups = list(make_groups(n_groups=8))
    amplitudes = groups[2].copy()
    amplitudes[5, 0, 3, 3] = 1e30  # finite, but its square is not in float32: group 5's loss is not finite
    groups[2] = amplitudes
    config = _config(validation_fraction=0.0, stages=(), lr_schedule="constant")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 0, batch \d") as caught:
        _run(backend, tuple(groups), config, tmp_path)
    from ptycholib.batching import epoch_order

    order = epoch_order(8, config.seed, 0)
    assert caught.value.batch == int(np.flatnonzero(order == 5)[0]) // config.batch_size
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def test_diverging_learning_rate_is_caught(backend):
    groups = make_groups(n_groups=8)
    config = _config(validation_fraction=0.0, stages=(), lr_schedule="constant", learning_rate=1e6, nepochs=6)
    with pytest.raises(NonFiniteLossError, match="non-finite (loss|gradient) at epoch"):
        _run(backend, groups, config, None)


# --------------------------------------------------------------------------------------------------
# the command line: --overwrite, --resume, exit 1 on divergence

_TINY = ["--backend", "torch", "--no-progress", "gridsize=1", "n_filters_scale=1", "n_groups=12", "batch_size=4",
         "validation_fraction=0"]


def test_existing_model_needs_overwrite_and_is_left_alone(tiny_data_dir, tmp_path, capsys):
    from ptycholib.cli import main

    out = tmp_path / "model"
    out.mkdir()
    (out / "wts.h5.zip").write_bytes(b"an old model")
    before = sorted(p.name for p in out.iterdir())
    assert main(["train", "--data", str(tiny_data_dir / "train.npz"), "--out", str(out), *_TINY, "nepochs=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert sorted(p.name for p in out.iterdir()) == before and (out / "wts.h5.zip").read_bytes() == b"an old model"


def test_cli_interrupted_run_resumes_to_the_straight_weights(tiny_data_dir, tmp_path, capsys, monkeypatch):
    from ptycholib import archive
    from ptycholib.cli import main
    from ptycholib.torch import training

    train = ["train", "--data", str(tiny_data_dir / "train.npz"), *_TINY, "nepochs=3"]
    assert main([*train, "--out", str(tmp_path / "straight")]) == 0
    record_epoch = training._History.on_train_epoch_end

    def interrupted(self, trainer, module):
        if trainer.current_epoch == 2:
            raise KeyboardInterrupt  # Ctrl-C in epoch 2: epochs 0 and 1 are checkpointed
        record_epoch(self, trainer, module)

    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        patch.setattr(training._History, "on_train_epoch_end", interrupted)
        assert main([*train, "--out", str(cut)]) == 130
    assert f"resume with `ptycholib train --resume {cut}`" in capsys.readouterr().err
    assert not (cut / "wts.h5.zip").exists()
    assert main(["train", "--data", str(tiny_data_dir / "train.npz"), "--out", str(tmp_path / "again"),
                 "--resume", str(cut)]) == 2  # --resume takes the run's own settings
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 0
    straight, resumed = archive.load_model(tmp_path / "straight"), archive.load_model(cut)
    for name, value in straight.weights.items():
        np.testing.assert_allclose(resumed.weights[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
    assert (cut / "history.csv").read_text() == (tmp_path / "straight" / "history.csv").read_text()


def test_cli_divergence_exits_1_and_keeps_the_old_model(tiny_data_dir, tmp_path, capsys):
    from ptycholib.cli import main

    out = tmp_path / "model"
    train = ["train", "--data", str(tiny_data_dir / "train.npz"), "--out", str(out)]
    assert main([*train, *_TINY, "nepochs=1"]) == 0
    old = (out / "wts.h5.zip").read_bytes()
    capsys.readouterr()
    assert main([*train, "--overwrite", *_TINY, "nepochs=3", "learning_rate=1e6"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite" in err[0] and "epoch" in err[0] and "batch" in err[0]
    assert (out / "wts.h5.zip").read_bytes() == old


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch", "tensorflow"])
def test_sigkilled_cli_run_resumes_to_the_straight_weights(name, tiny_data_dir, tmp_path):
    """The issue's case: ``kill -9`` during training, then ``--resume``; final weights within 1e-5."""
    import signal
    import subprocess
    import sys
    import time

    from ptycholib import archive
    from ptycholib.cli import main

    pytest.importorskip(name)
    settings = ["--backend", name, "--no-progress", "gridsize=1", "n_filters_scale=1", "n_groups=12", "batch_size=4",
                "validation_fraction=0", "nepochs=12"]
    data_args = ["--data", str(tiny_data_dir / "train.npz")]
    cut = tmp_path / "cut"
    env = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen([sys.executable, "-m", "ptycholib", "train", *data_args, "--out", str(cut), *settings],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = cut / "logs" / ("checkpoints/last.ckpt" if name == "torch" else "backup/state.json")
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    if process.wait() == 0:
        pytest.skip("the run finished before it could be killed")
    assert not (cut / "wts.h5.zip").exists()
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 0
    assert main(["train", *data_args, "--out", str(tmp_path / "straight"), *settings]) == 0
    straight, resumed = archive.load_model(tmp_path / "straight"), archive.load_model(cut)
    for key, value in straight.weights.items():
        np.testing.assert_allclose(resumed.weights[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
