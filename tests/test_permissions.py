"""Files written by ptycholib get the permissions of a plain ``open(path, "w")``, and writes are atomic.

Every ``save_*`` function goes through `ptycholib._io.atomic_write`; these tests set the umask (and
restore it), so they also show that the temporary file's mode (``mkstemp`` would give 0600) does not
leak into the result.
"""

import os
import stat
import threading

import numpy as np
import pytest

from ptycholib import archive, data, workflow
from ptycholib._io import atomic_write
from ptycholib.archive import ModelArchive
from ptycholib.backends import is_available
from ptycholib.config import Config, apply_overrides, save_config


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _plain_open_mode(folder):
    reference = folder / "plain-open.txt"
    with open(reference, "w") as handle:
        handle.write("x")
    mode = _mode(reference)
    reference.unlink()
    return mode


def _small_archive():
    cfg = apply_overrides(Config(), {"n_filters_scale": 1})
    weights = {name: np.zeros(shape, np.float32) for name, shape in archive.canonical_shapes(cfg.model).items()}
    weights["physics.probe"] = np.ones((cfg.model.N, cfg.model.N), np.complex64)
    return ModelArchive(config=cfg, weights=weights, input_scale=0.5, backend="torch")


def _reconstruction(rng):
    obj = (rng.normal(size=(30, 40)) + 1j * rng.normal(size=(30, 40))).astype(np.complex64)
    return workflow.Reconstruction(
        obj=obj, weights=np.ones(obj.shape), region=np.ones(obj.shape, bool),
        object_patches=np.zeros((1, 1, 4, 4), np.complex64), indices=np.zeros((1, 1), np.int64),
        inference_seconds=0.1, reassembly_seconds=0.2, total_seconds=0.3, backend="torch",
    )


def _save(writer, folder, tiny_dataset, rng):
    """Write one file with the named ptycholib writer; return its path."""
    if writer == "save_config":
        save_config(Config(), folder / "config.yaml")
        return folder / "config.yaml"
    if writer == "save_model":
        return archive.save_model(folder / "wts.h5.zip", _small_archive())
    if writer == "save_reconstruction":
        return workflow.save_reconstruction(_reconstruction(rng), folder / "recon.npz")
    return data.save_npz(tiny_dataset, folder / "data.npz")


@pytest.mark.parametrize("writer", ["save_config", "save_model", "save_reconstruction", "save_npz"])
def test_saved_files_have_plain_open_permissions(writer, tiny_dataset, rng, tmp_path, umask022):
    written = _save(writer, tmp_path, tiny_dataset, rng)
    assert _mode(written) == 0o644 == _plain_open_mode(tmp_path)
    assert list(tmp_path.iterdir()) == [written]


def test_failed_save_leaves_no_temporary_and_no_target(tmp_path, rng, monkeypatch, umask022):
    def failing_savez(handle, **arrays):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    target = tmp_path / "recon.npz"
    with pytest.raises(OSError, match="disk full"):
        workflow.save_reconstruction(_reconstruction(rng), target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_failed_model_save_keeps_the_previous_file(tmp_path):
    target = archive.save_model(tmp_path / "wts.h5.zip", _small_archive())
    before = target.read_bytes()
    broken = _small_archive()
    broken.weights["physics.probe"] = np.ones((3, 3), np.complex64)
    with pytest.raises(archive.ArchiveError, match="physics.probe has shape"):
        archive.save_model(target, broken)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["wts.h5.zip"]


# --------------------------------------------------------------------------------------------------
# atomic_write itself


def test_text_and_binary_round_trip(tmp_path):
    with atomic_write(tmp_path / "a.txt") as handle:
        handle.write("phase 相位\n")
    with atomic_write(tmp_path / "b.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "phase 相位\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask_like_open(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "f.txt") as handle:
            handle.write("x")
        plain = _plain_open_mode(tmp_path)
        assert os.umask(umask) == umask  # atomic_write left the umask alone
    finally:
        os.umask(old)
    assert _mode(tmp_path / "f.txt") == expected == plain


def test_replaced_file_gets_the_fresh_file_mode(tmp_path, umask022):
    target = tmp_path / "f.txt"
    target.write_text("old")
    target.chmod(0o600)
    with atomic_write(target) as handle:
        handle.write("new")
    assert target.read_text() == "new" and _mode(target) == 0o644


def test_target_appears_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    with atomic_write(target) as handle:
        handle.write("partial")
        handle.flush()
        hidden = list(tmp_path.iterdir())
        assert not target.exists()
        assert len(hidden) == 1 and hidden[0].name.startswith(".f.txt.") and hidden[0].name.endswith(".tmp")
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize("error", [ValueError("bad value"), KeyboardInterrupt()])
def test_failure_removes_the_temporary_and_keeps_the_old_file(tmp_path, error):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(type(error)):
        with atomic_write(target) as handle:
            handle.write("new")
            raise error
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_bad_arguments_fail_with_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match=r"mode='a' is not supported; use 'w' \(text\) or 'wb' \(binary\)"):
        with atomic_write(tmp_path / "f.txt", "a"):
            pass
    with pytest.raises(FileNotFoundError, match="folder .*missing does not exist; create it first"):
        with atomic_write(tmp_path / "missing" / "f.txt"):
            pass
    with pytest.raises(IsADirectoryError, match="it is a folder; give a file name"):
        with atomic_write(tmp_path):
            pass
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_never_leave_a_mixed_file(tmp_path):
    target = tmp_path / "f.txt"

    def write(letter):
        for _ in range(10):
            with atomic_write(target) as handle:
                handle.write(letter * 10_000)

    threads = [threading.Thread(target=write, args=(letter,)) for letter in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = target.read_text()
    assert len(text) == 10_000 and len(set(text)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.skipif(not is_available("torch"), reason="needs the torch backend")
def test_files_the_commands_write_follow_the_umask(tmp_path, umask022, capsys):
    """End to end: every file ``simulate``, ``train``, ``reconstruct`` and ``ptychodus settings`` write is 0644 under umask 022."""
    from ptycholib.cli import main

    scans, model = tmp_path / "scans", tmp_path / "model"
    assert main(["simulate", "--n-train", "36", "--n-test", "16", "--nphotons", "1e6", "--step-px", "4",
                 "--out", str(scans)]) == 0
    assert main(["train", "--data", str(scans / "train.npz"), "--backend", "torch", "--out", str(model), "--no-progress",
                 "n_filters_scale=1", "n_groups=8", "nepochs=1", "batch_size=8"]) == 0
    assert main(["reconstruct", "--model", str(model), "--data", str(scans / "test.npz"),
                 "--out", str(tmp_path / "recon" / "recon.npz")]) == 0
    assert main(["ptychodus", "settings", str(tmp_path / "settings.ini")]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"train.npz", "test.npz", "wts.h5.zip", "history.csv", "recon.npz", "settings.ini"} <= names
    assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in written if _mode(p) != 0o644} == {}
    folders = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in folders if _mode(p) != 0o755} == {}
