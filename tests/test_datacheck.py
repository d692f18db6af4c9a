"""`ptycholib.datacheck` and ``ptycholib check`` (issue 16, item 6): each planted defect is found."""

import dataclasses

import numpy as np
import pytest

from ptycholib import data, datacheck
from ptycholib.cli import main


def kinds(dataset):
    return [finding.kind for finding in datacheck.check_data(dataset)]


def with_amplitudes(dataset, change):
    amplitudes = dataset.amplitudes.copy()
    change(amplitudes)
    return dataclasses.replace(dataset, amplitudes=amplitudes)


def test_clean_simulation_has_no_findings(tiny_dataset):
    assert kinds(tiny_dataset) == []
    assert "no problems found" in datacheck.format_report([], "tiny.npz", tiny_dataset)


def test_zero_frames(tiny_dataset):
    found = datacheck.check_data(with_amplitudes(tiny_dataset, lambda a: a.__setitem__((slice(3, 5),), 0)))
    assert [f.kind for f in found] == ["zero_frames"]
    assert found[0].indices == (3, 4) and "frames 3, 4" in found[0].message


def test_uint16_saturated_everywhere(tiny_dataset):
    saturated = dataclasses.replace(tiny_dataset, amplitudes=np.full_like(tiny_dataset.amplitudes, np.sqrt(65535.0)))
    found = datacheck.check_data(saturated)
    assert [f.kind for f in found] == ["saturated_pixels"]
    assert "65535" in found[0].message and found[0].count == saturated.amplitudes.size


def test_saturated_pixels_in_some_frames(tiny_dataset):
    def saturate(a):
        a[7, 30:33, 30:33] = np.sqrt(65535.0)

    assert kinds(with_amplitudes(tiny_dataset, saturate)) == ["saturated_pixels"]


def test_hot_pixel_found_and_masked_one_ignored(tiny_dataset):
    def heat(a):
        a[:, 5, 50] = np.sqrt(5000.0)

    hot = with_amplitudes(tiny_dataset, heat)
    found = datacheck.check_data(hot)
    assert [f.kind for f in found] == ["hot_pixels"] and found[0].indices == ((5, 50),)
    mask = np.zeros((64, 64), dtype=bool)
    mask[5, 50] = True
    assert kinds(dataclasses.replace(hot, bad_pixels=mask)) == []


def test_frames_far_from_the_median_total(tiny_dataset):
    def dim(a):
        a[11] *= 0.1  # amplitudes: a hundredth of the counts

    found = datacheck.check_data(with_amplitudes(tiny_dataset, dim))
    assert [f.kind for f in found] == ["outlier_frames"] and found[0].indices == (11,)


def test_positions_outside_the_object(tiny_dataset):
    x_px = tiny_dataset.x_px.copy()
    x_px[2] = 5.0  # the centre is on the canvas, the 64 px window is not
    found = datacheck.check_data(dataclasses.replace(tiny_dataset, x_px=x_px))
    assert [f.kind for f in found] == ["positions_outside"] and found[0].indices == (2,)
    no_object = dataclasses.replace(tiny_dataset, obj=None, x_px=x_px)
    assert kinds(no_object) == ["positions_outside"]


def test_bad_factors_are_refused(tiny_dataset):
    with pytest.raises(ValueError, match="must be > 1"):
        datacheck.check_data(tiny_dataset, total_factor=0.5)


@pytest.fixture
def defective_file(tiny_dataset, tmp_path):
    amplitudes = tiny_dataset.amplitudes.copy()
    amplitudes[:, 5, 50] = np.sqrt(5000.0)
    amplitudes[0] = 0
    path = tmp_path / "defective.npz"
    data.save_npz(dataclasses.replace(tiny_dataset, amplitudes=amplitudes), path)
    return path


def test_check_command_reports_and_strict_exits_2(defective_file, tiny_dataset, tmp_path, capsys):
    assert main(["check", str(defective_file)]) == 0
    out = capsys.readouterr().out
    assert "2 kinds of problem" in out and "zero_frames" in out and "hot_pixels" in out
    assert main(["check", str(defective_file), "--strict"]) == 2
    clean = tmp_path / "clean.npz"
    data.save_npz(tiny_dataset, clean)
    assert main(["check", str(clean), "--strict"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_train_warns_and_strict_refuses_before_writing(defective_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(defective_file), "--out", str(out), "--no-progress", "--strict", "nepochs=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "warning:" in err and "zero_frames" in err and err.strip().splitlines()[-1].startswith("ptycholib train: error:")
    assert not out.exists()


def test_reconstruct_strict_refuses(defective_file, tmp_path, capsys):
    out = tmp_path / "recon.npz"
    # the data are read and checked before the model (which is missing here: it would be the next error)
    status = main(["reconstruct", "--model", str(tmp_path / "missing"), "--data", str(defective_file), "--out", str(out),
                   "--strict"])
    assert status == 2 and not out.exists()
    assert "has data problems (zero_frames, hot_pixels" in capsys.readouterr().err
