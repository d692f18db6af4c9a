"""The CLI pipeline: simulate -> train -> reconstruct -> evaluate, and its errors."""

import csv
import json

import numpy as np
import pytest

from ptycholib.backends import is_available
from ptycholib.cli import main

pytestmark = pytest.mark.skipif(not is_available("torch"), reason="needs the torch backend")


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, tiny_data_dir):
    out = tmp_path_factory.mktemp("cli_model")
    status = main(["train", "--data", str(tiny_data_dir / "train.npz"), "--backend", "torch", "--out", str(out),
                   "--no-progress", "gridsize=2", "n_filters_scale=1", "n_groups=16", "nepochs=2", "batch_size=8"])
    assert status == 0
    return out


def test_train_writes_archive_and_history(trained_dir, capsys):
    assert (trained_dir / "wts.h5.zip").is_file()
    with (trained_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and {"epoch", "loss", "val_loss", "learning_rate", "physics_weight"} <= set(rows[0])


def test_reconstruct_and_evaluate_round_trip(trained_dir, tiny_data_dir, tmp_path, capsys):
    recon = tmp_path / "recon.npz"
    assert main(["reconstruct", "--model", str(trained_dir), "--data", str(tiny_data_dir / "test.npz"),
                 "--batch-size", "4", "--out", str(recon)]) == 0
    with np.load(recon, allow_pickle=False) as npz:
        assert npz["object"].dtype == np.complex64 and json.loads(str(npz["metadata"]))["backend"] == "torch"
    capsys.readouterr()
    assert main(["evaluate", "--recon", str(recon), "--truth", str(tiny_data_dir / "test.npz"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    for key in ("phase_rmse", "amplitude_ssim", "phase_ssim", "amplitude_psnr", "phase_psnr", "amplitude_frc50",
                "phase_frc50"):
        assert key in scores


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "missing.npz", "--out", "x"], "missing.npz"),
        (["train", "--data", "{data}", "--out", "{tmp}", "gridsize=0"], "gridsize=0"),
        (["reconstruct", "--model", "{tmp}/nothing.zip", "--data", "{data}", "--out", "{tmp}/r.npz"], "does not exist"),
        (["reconstruct", "--model", "{model}", "--data", "{data}", "--batch-size", "0", "--out", "{tmp}/r.npz"], "--batch-size=0"),
        (["reconstruct", "--model", "{data}", "--data", "{data}", "--out", "{tmp}/r.npz"], "ptycholib model"),
    ],
)
def test_bad_input_exits_2(args, message, trained_dir, tiny_data_dir, tmp_path, capsys):
    values = {"data": str(tiny_data_dir / "test.npz"), "tmp": str(tmp_path), "model": str(trained_dir)}
    assert main([a.format(**values) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
