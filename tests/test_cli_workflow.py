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


def test_reconstruct_refine_records_the_refinement(trained_dir, tiny_data_dir, tmp_path, capsys):
    paths = {k: tmp_path / f"{k}.npz" for k in (0, 3)}
    for k, path in paths.items():
        assert main(["reconstruct", "--model", str(trained_dir), "--data", str(tiny_data_dir / "test.npz"),
                     "--refine", str(k), "--refine-alpha", "0.3", "--out", str(path)]) == 0
    with np.load(paths[3], allow_pickle=False) as npz:
        metadata = json.loads(str(npz["metadata"]))
        refined = npz["object"]
    with np.load(paths[0], allow_pickle=False) as npz:
        network = npz["object"]
    assert metadata["refine_iterations"] == 3 and metadata["refine_alpha"] == 0.3 and metadata["refine_seconds"] > 0
    assert refined.shape == network.shape and not np.allclose(refined, network)
    ssim = {}
    for k, path in paths.items():
        capsys.readouterr()
        assert main(["evaluate", "--recon", str(path), "--truth", str(tiny_data_dir / "test.npz"), "--json"]) == 0
        ssim[k] = json.loads(capsys.readouterr().out)["amplitude_ssim"]
    assert ssim[3] > ssim[0] + 0.05, ssim


def test_train_init_fine_tunes_and_records_its_parent(trained_dir, tiny_data_dir, tmp_path):
    from ptycholib import archive

    out = tmp_path / "tuned"
    assert main(["train", "--init", str(trained_dir), "--data", str(tiny_data_dir / "test.npz"), "--out", str(out),
                 "--no-progress", "nepochs=1"]) == 0
    parent, tuned = archive.load_model(trained_dir), archive.load_model(out)
    assert tuned.parent == {"name": "wts.h5.zip", "sha256": archive.file_sha256(trained_dir / "wts.h5.zip")}
    assert tuned.config.model == parent.config.model and tuned.config.training.nepochs == 1
    assert any(not np.array_equal(parent.weights[name], tuned.weights[name]) for name in parent.weights)


@pytest.mark.parametrize("case", ["corrupt", "foreign_n", "model_change"])
def test_train_init_refuses_bad_parents_and_writes_nothing(case, trained_dir, tiny_data_dir, tmp_path, capsys):
    from ptycholib import data

    model, scan, extra = str(trained_dir), tiny_data_dir / "test.npz", []
    if case == "corrupt":
        model = tmp_path / "corrupt.zip"
        model.write_bytes((trained_dir / "wts.h5.zip").read_bytes()[:2000])
    elif case == "foreign_n":
        dataset = data.load_npz(scan)
        big = data.PtychoData(amplitudes=np.pad(dataset.amplitudes, ((0, 0), (32, 32), (32, 32))), x_px=dataset.x_px,
                              y_px=dataset.y_px, probe=np.pad(dataset.probe, 32))
        scan = tmp_path / "n128.npz"
        data.save_npz(big, scan)
    else:
        extra = ["gridsize=1"]
    out = tmp_path / "out"
    assert main(["train", "--init", str(model), "--data", str(scan), "--out", str(out), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and {"corrupt": "zip", "foreign_n": "N=64", "model_change": "gridsize"}[case] in err[0], err
    assert not out.exists()
