"""``ptycholib evaluate``: round trip through NPZ files and clear one-line errors (exit status 2)."""

import json

import numpy as np
import pytest

from ptycholib import cli, data, metrics

REQUIRED = ("phase_rmse", "amplitude_ssim", "phase_ssim", "amplitude_psnr", "phase_psnr", "amplitude_frc50",
            "phase_frc50")


@pytest.fixture
def files(tmp_path, tiny_dataset, rng):
    obj = tiny_dataset.obj
    truth = data.save_npz(tiny_dataset, tmp_path / "truth.npz")
    noisy = 0.3j * obj + 0.001 * (rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape))
    recon = tmp_path / "recon.npz"
    np.savez(recon, object=noisy.astype(np.complex64), metadata=np.array(json.dumps({"backend": "test"})))
    perfect = tmp_path / "perfect.npz"
    np.savez(perfect, object=obj)
    n_pixels = int(metrics.scanned_region_mask(tiny_dataset.x_px, tiny_dataset.y_px, obj.shape, 20).sum())
    return {"truth": truth, "recon": recon, "perfect": perfect, "dir": tmp_path, "shape": obj.shape,
            "n_pixels": n_pixels}


def _run(capsys, *args):
    status = cli.main(["evaluate", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def test_json_round_trip(files, capsys):
    status, out, err = _run(capsys, "--recon", files["recon"], "--truth", files["truth"], "--json")
    assert status == 0, err
    scores = json.loads(out)
    assert set(REQUIRED) <= set(scores)
    assert scores["amplitude_ssim"] > 0.8 and scores["phase_rmse"] < 0.1
    assert scores["global_scale"] == pytest.approx(1 / 0.3, rel=0.02)
    assert scores["window_px"] == 20 and scores["n_pixels"] == files["n_pixels"]


def test_table_output(files, capsys):
    status, out, _ = _run(
        capsys, "--recon", files["recon"], "--truth", files["truth"], "--no-register", "--window", "30"
    )
    assert status == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert set(REQUIRED) <= set(lines)
    assert "dB" in lines["amplitude_psnr"] and lines["window_px"].split()[1] == "30"


def test_perfect_reconstruction_gives_valid_json(files, capsys):
    status, out, _ = _run(capsys, "--recon", files["perfect"], "--truth", files["truth"], "--json")
    assert status == 0
    scores = json.loads(out)  # strict JSON: an infinite PSNR is written as null
    assert scores["amplitude_ssim"] == pytest.approx(1, abs=1e-6)


def _assert_one_line_error(status, out, err, *fragments):
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("ptycholib evaluate: error:")
    for fragment in fragments:
        assert fragment in err


def test_truncated_file(files, capsys):
    broken = files["dir"] / "broken.npz"
    broken.write_bytes(files["recon"].read_bytes()[:300])
    _assert_one_line_error(*_run(capsys, "--recon", broken, "--truth", files["truth"]), "broken.npz", "truncated")
    _assert_one_line_error(*_run(capsys, "--recon", files["recon"], "--truth", broken), "broken.npz")


def test_mismatched_grid(files, capsys):
    small = files["dir"] / "small.npz"
    np.savez(small, object=np.ones((50, 50), dtype=np.complex64))
    _assert_one_line_error(*_run(capsys, "--recon", small, "--truth", files["truth"]), "(50, 50)", str(files["shape"]))


def test_wrong_files(files, capsys):
    _assert_one_line_error(*_run(capsys, "--recon", files["truth"], "--truth", files["truth"]), "no 'object'")
    _assert_one_line_error(*_run(capsys, "--recon", files["dir"] / "missing.npz", "--truth", files["truth"]),
                           "missing.npz")
    real = files["dir"] / "real.npz"
    np.savez(real, object=np.ones(files["shape"]))
    _assert_one_line_error(*_run(capsys, "--recon", real, "--truth", files["truth"]), "complex")
    no_truth = files["dir"] / "no_truth.npz"
    with np.load(files["truth"]) as npz:
        np.savez(no_truth, **{k: npz[k] for k in npz.files if k != "objectGuess"})
    _assert_one_line_error(*_run(capsys, "--recon", files["recon"], "--truth", no_truth), "objectGuess")
