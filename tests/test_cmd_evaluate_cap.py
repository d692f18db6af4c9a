"""``ptycholib evaluate --max-shift-px``: the registration shift and its cap are in the output."""

import json

import numpy as np
import pytest
from scipy.ndimage import fourier_shift

from ptycholib import cli, data, metrics


def _write_recon(path, obj):
    np.savez(path, object=obj.astype(np.complex64), metadata=np.array(json.dumps({"backend": "test"})))
    return path


@pytest.fixture
def truth_file(tmp_path, tiny_dataset):
    return data.save_npz(tiny_dataset, tmp_path / "truth.npz"), tiny_dataset


def _evaluate(capsys, *args):
    status = cli.main(["evaluate", *map(str, args)])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def test_json_reports_shift_and_cap(truth_file, tmp_path, capsys):
    truth, dataset = truth_file
    obj = dataset.obj
    moved = np.fft.ifft2(fourier_shift(np.fft.fft2(obj), (1.0, -2.0)))
    recon = _write_recon(tmp_path / "near.npz", moved)
    scores = json.loads(_evaluate(capsys, "--recon", recon, "--truth", truth, "--json"))
    # The masked cross-correlation is biased towards 0 (the region's edges do not move), so the
    # shift found is compared with the library's, not with (-1, 2).
    mask = metrics.scanned_region_mask(dataset.x_px, dataset.y_px, obj.shape, 20)
    expected = metrics.evaluate_reconstruction(moved.astype(np.complex64), obj, mask=mask)["shift_px"]
    np.testing.assert_allclose(scores["shift_px"], expected, atol=1e-9)
    assert 1.5 < np.hypot(*scores["shift_px"]) <= 3.0
    assert scores["max_shift_px"] == 3.0 and scores["shift_capped"] is False
    far = _write_recon(tmp_path / "far.npz", np.roll(obj, (9, 4), axis=(0, 1)))
    capped = json.loads(_evaluate(capsys, "--recon", far, "--truth", truth, "--json", "--max-shift-px", "2"))
    assert capped["max_shift_px"] == 2.0 and capped["shift_capped"] is True
    assert np.hypot(*capped["shift_px"]) <= 2.0 + 1e-9
    uncapped = json.loads(_evaluate(capsys, "--recon", far, "--truth", truth, "--json", "--max-shift-px", "inf"))
    assert uncapped["max_shift_px"] is None
    np.testing.assert_allclose(uncapped["shift_px"], (-9.0, -4.0), atol=0.2)  # biased slightly towards 0


def test_table_reports_shift_and_cap(truth_file, tmp_path, capsys):
    truth, dataset = truth_file
    obj = dataset.obj
    recon = _write_recon(tmp_path / "same.npz", obj)
    lines = {line.split()[0]: line for line in _evaluate(capsys, "--recon", recon, "--truth", truth).splitlines()}
    assert lines["max_shift_px"].split()[1:] == ["3", "px"]
    assert lines["shift_capped"].split()[1] == "False" and "shift_px" in lines


def test_negative_cap_is_one_line_error(truth_file, tmp_path, capsys):
    truth, dataset = truth_file
    obj = dataset.obj
    recon = _write_recon(tmp_path / "same.npz", obj)
    status = cli.main(["evaluate", "--recon", str(recon), "--truth", str(truth), "--max-shift-px", "-1"])
    out, err = capsys.readouterr()
    assert status == 2 and out == "" and err.count("\n") == 1 and "--max-shift-px" in err
