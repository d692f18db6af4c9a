"""Hostile inputs against the command line: each is refused with exit status 2 and one stderr line.

Every case builds its bad input in ``tmp_path`` and runs ``ptycholib.cli.main`` in-process; the
checks (`_refused`): exit 2, exactly one line on stderr that names the problem, no traceback, no new
file anywhere under ``tmp_path``, and a peak of traced (NumPy and Python) allocations under 500 MB.
One decompression bomb also runs in a subprocess whose peak RSS is checked. docs/robustness.md lists
the guarantees these tests hold the code to.
"""

import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tracemalloc
import zipfile

import h5py
import numpy as np
import pytest

from ptycholib import _io, archive, data
from ptycholib.archive import ModelArchive
from ptycholib.cli import main
from ptycholib.config import Config, apply_overrides

MEMORY_LIMIT = 500 * 2**20
N = 64


# ------------------------------------------------------------------------------------------------
# helpers


def _snapshot(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _refused(args, tmp_path, capsys, expect):
    """Run the CLI on hostile input; check exit 2, one matching line, no traceback, nothing written, bounded memory."""
    args = [str(a) for a in args]
    before = _snapshot(tmp_path)
    capsys.readouterr()
    tracemalloc.start()
    try:
        status = main(args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert expect.lower() in lines[0].lower(), lines[0]
    assert _snapshot(tmp_path) == before
    assert peak < MEMORY_LIMIT
    return lines[0]


def _config(**overrides):
    return apply_overrides(Config(), {"n_filters_scale": 1, **overrides})


def _weights(cfg, rng):
    weights = {name: rng.normal(size=shape).astype(np.float32) for name, shape in archive.canonical_shapes(cfg.model).items()}
    weights["physics.probe"] = np.ones((N, N), np.complex64)
    return weights


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    cfg = _config()
    model = ModelArchive(config=cfg, weights=_weights(cfg, np.random.default_rng(0)), input_scale=0.5, backend="torch")
    return archive.save_model(tmp_path_factory.mktemp("model") / "wts.h5.zip", model)


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    return folder


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write_archive(path, members, *, fix_checksums=True):
    """Write a zip of ``members``; by default the manifest's checksums are recomputed (an attacker can)."""
    members = dict(members)
    if fix_checksums:
        manifest = json.loads(members["manifest.json"])
        for name in ("config.json", "weights.h5"):
            if isinstance(manifest.get("sha256"), dict) and name in members:
                manifest["sha256"][name] = hashlib.sha256(members[name]).hexdigest()
        members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in members.items():
            zf.writestr(name, value)
    return path


def _weights_h5(good_model, edit):
    """Rewrite the weights.h5 of ``good_model`` with ``edit(h5file, weights_group, outside_folder)`` applied."""
    raw = _members(good_model)["weights.h5"]
    buffer = io.BytesIO(raw)
    with h5py.File(buffer, "a") as h5:
        edit(h5, h5["weights"])
    return buffer.getvalue()


def _hostile_archive(good_model, folder, edit):
    members = _members(good_model)
    members["weights.h5"] = _weights_h5(good_model, edit)
    return _write_archive(folder / "wts.h5.zip", members)


def _reconstruct(model, scan, tmp_path):
    return ["reconstruct", "--model", model, "--data", scan, "--out", tmp_path / "out" / "recon.npz"]


def _train(scan, tmp_path, *extra):
    return ["train", "--data", scan, "--backend", "torch", "--out", tmp_path / "out", "--no-progress", *extra]


def _npz(path, **arrays):
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def _scan(**changes):
    rng = np.random.default_rng(3)
    arrays = {
        "diff3d": rng.uniform(0, 2, (4, N, N)).astype(np.float32), "xcoords": np.full(4, 40.0),
        "ycoords": np.full(4, 40.0), "probeGuess": np.ones((N, N), np.complex64),
        "objectGuess": np.ones((100, 100), np.complex64), "metadata": np.array(json.dumps({"measurement": "amplitude"})),
    }  # fmt: skip
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


# ------------------------------------------------------------------------------------------------
# model archives: weights.h5 that reaches outside the archive


BIAS = "encoder.0.conv0.bias"


def _external_storage(outside):
    def edit(h5, group):
        shape = group[BIAS].shape
        secret = outside / "secret.bin"
        secret.write_bytes(b"\x01" * (4 * int(np.prod(shape))))
        del group[BIAS]
        group.create_dataset(BIAS, shape=shape, dtype=np.float32, external=[(str(secret), 0, 4 * int(np.prod(shape)))])

    return edit


def _virtual(outside):
    def edit(h5, group):
        shape = group[BIAS].shape
        with h5py.File(outside / "source.h5", "w") as source:
            source["data"] = np.ones(shape, np.float32)
        layout = h5py.VirtualLayout(shape=shape, dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(outside / "source.h5"), "data", shape=shape)
        del group[BIAS]
        group.create_virtual_dataset(BIAS, layout, fillvalue=0)

    return edit


def _soft_link(outside):
    def edit(h5, group):
        h5["elsewhere"] = group[BIAS][()]
        del group[BIAS]
        group[BIAS] = h5py.SoftLink("/elsewhere")

    return edit


def _external_link(outside):
    def edit(h5, group):
        with h5py.File(outside / "other.h5", "w") as other:
            other["data"] = group[BIAS][()]
        del group[BIAS]
        group[BIAS] = h5py.ExternalLink(str(outside / "other.h5"), "/data")

    return edit


def _named_datatype(outside):
    def edit(h5, group):
        group["extra"] = np.dtype("float32")

    return edit


def _float64(outside):
    def edit(h5, group):
        value = group[BIAS][()]
        del group[BIAS]
        group[BIAS] = value.astype(np.float64)

    return edit


def _bad_input_scale(outside):
    def edit(h5, group):
        h5.attrs["input_scale"] = "large"

    return edit


@pytest.mark.parametrize(
    "edit, expect",
    [
        (_external_storage, "uses external storage"),
        (_virtual, "virtual dataset"),
        (_soft_link, "elsewhere"),  # the extra top-level member or the soft link, whichever is seen first
        (_external_link, "external link"),
        (_named_datatype, "not a dataset or group"),
        (_float64, "dtype float64"),
        (_bad_input_scale, "input_scale"),
    ],
    ids=["external-storage", "virtual", "soft-link", "external-link", "named-datatype", "float64", "input-scale"],
)
def test_archive_weights_that_reach_outside_are_refused(edit, expect, good_model, inputs, tiny_data_dir, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    bad = _hostile_archive(good_model, inputs, edit(outside))
    _refused(_reconstruct(bad, tiny_data_dir / "test.npz", tmp_path), tmp_path, capsys, expect)


def test_soft_link_inside_weights_is_named(good_model, inputs, tmp_path):
    def edit(h5, group):
        group["copy"] = group[BIAS][()]
        del group[BIAS]
        group[BIAS] = h5py.SoftLink("/weights/copy")

    bad = _hostile_archive(good_model, inputs, edit)
    with pytest.raises(archive.ArchiveError, match="is a soft link"):
        archive.load_model(bad)


def test_external_storage_never_reads_the_outside_file(good_model, inputs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    bad = _hostile_archive(good_model, inputs, _external_storage(outside))
    with pytest.raises(archive.ArchiveError, match=f"{BIAS} .* uses external storage .*secret.bin"):
        archive.load_model(bad)


# ------------------------------------------------------------------------------------------------
# model archives: the zip and the manifest


def _duplicate_members(good_model, folder):
    members = _members(good_model)
    path = folder / "wts.h5.zip"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "w") as zf:
        for name, value in members.items():
            zf.writestr(name, value)
        zf.writestr("weights.h5", members["weights.h5"])
    return path


def _manifest_edit(**changes):
    def build(good_model, folder):
        members = _members(good_model)
        manifest = json.loads(members["manifest.json"])
        manifest.update(changes)
        members["manifest.json"] = json.dumps(manifest).encode()
        return _write_archive(folder / "wts.h5.zip", members, fix_checksums=False)

    return build


def _bomb_member(good_model, folder):
    members = _members(good_model)
    members["weights.h5"] = bytes(64 * 2**20)  # compresses to ~64 KiB; never decompressed
    return _write_archive(folder / "wts.h5.zip", members, fix_checksums=False)


def _empty(good_model, folder):
    path = folder / "wts.h5.zip"
    path.write_bytes(b"")
    return path


def _truncated(good_model, folder):
    path = folder / "wts.h5.zip"
    raw = good_model.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


@pytest.mark.parametrize(
    "build, expect",
    [
        (_duplicate_members, "duplicate members"),
        (_manifest_edit(sha256={"config.json": 5, "weights.h5": None}), "sha256 must map"),
        (_manifest_edit(sha256="0" * 64), "sha256 must map"),
        (_manifest_edit(format_version="1"), "format_version"),
        (_manifest_edit(format_version=True), "format_version"),
        (_manifest_edit(backend=["torch"]), "manifest backend"),
        (_bomb_member, "declares 64 MiB uncompressed"),
        (_empty, "is empty"),
        (_truncated, "not a readable zip archive"),
    ],
    ids=["duplicates", "sha256-not-str", "sha256-str", "version-str", "version-bool", "backend", "bomb", "empty",
         "truncated"],
)
def test_bad_archives_are_refused(build, expect, good_model, inputs, tiny_data_dir, tmp_path, capsys):
    bad = build(good_model, inputs)
    _refused(_reconstruct(bad, tiny_data_dir / "test.npz", tmp_path), tmp_path, capsys, expect)


# ------------------------------------------------------------------------------------------------
# NPZ data files


def _text_renamed(folder):
    path = folder / "scan.npz"
    path.write_text("x,y\n1,2\n")
    return path


def _empty_npz(folder):
    path = folder / "scan.npz"
    path.write_bytes(b"")
    return path


def _truncated_npz(folder):
    path = _npz(folder / "full.npz", **_scan())
    raw = path.read_bytes()
    path.unlink()
    cut = folder / "scan.npz"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    return cut


def _string_diff3d(folder):
    return _npz(folder / "scan.npz", **_scan(diff3d=np.full((4, N, N), "a")))


def _object_array(folder):
    return _npz(folder / "scan.npz", **_scan(xcoords=np.array([1.0, None, 3.0, 4.0], dtype=object)))


def _duplicate_npz(folder):
    good = _npz(folder / "good.npz", **_scan())
    members = _members(good)
    good.unlink()
    path = folder / "scan.npz"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "w") as zf:
        for name, value in members.items():
            zf.writestr(name, value)
        zf.writestr("diff3d.npy", members["diff3d.npy"])
    return path


def _declared_huge(folder):
    """A diff3d whose .npy header declares 10**6 patterns but holds 4."""
    path = _npz(folder / "good.npz", **_scan())
    members = _members(path)
    path.unlink()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, N, N)})
    members["diff3d.npy"] = header.getvalue() + members["diff3d.npy"][len(header.getvalue()):]
    return _write_archive(folder / "scan.npz", members, fix_checksums=False)


def _non_array_member(folder):
    path = _npz(folder / "good.npz", **_scan())
    members = _members(path)
    path.unlink()
    members["notes.txt"] = b"hello"
    return _write_archive(folder / "scan.npz", members, fix_checksums=False)


@pytest.mark.parametrize(
    "build, expect",
    [
        (_text_renamed, "is not an NPZ file"),
        (_empty_npz, "is empty"),
        (_truncated_npz, "scan.npz"),
        (_string_diff3d, "has dtype <U1"),
        (_object_array, "pickled object array"),
        (_duplicate_npz, "duplicate members"),
        (_declared_huge, "declares shape (1000000, 64, 64)"),
        (_non_array_member, "not a .npy array"),
    ],
    ids=["text", "empty", "truncated", "string-dtype", "object", "duplicates", "declared-huge", "non-array"],
)
@pytest.mark.parametrize("command", ["train", "reconstruct"])
def test_bad_npz_files_are_refused(command, build, expect, good_model, inputs, tmp_path, capsys):
    scan = build(inputs)
    args = _train(scan, tmp_path) if command == "train" else _reconstruct(good_model, scan, tmp_path)
    line = _refused(args, tmp_path, capsys, expect)
    assert "pickled" not in line or build is _object_array


def test_npz_decompression_bomb_is_refused_before_reading(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(_io.MAX_ARRAY_BYTES_ENV, str(2**20))
    scan = _npz(inputs / "scan.npz", **_scan(diff3d=np.zeros((256, N, N), np.float32), xcoords=np.full(256, 40.0),
                                             ycoords=np.full(256, 40.0)))  # 4 MiB of zeros
    with zipfile.ZipFile(scan) as zf:  # np.savez stores; compress it as an attacker would
        members = {name: zf.read(name) for name in zf.namelist()}
    _write_archive(scan, members, fix_checksums=False)
    assert scan.stat().st_size < 2**20
    _refused(_train(scan, tmp_path), tmp_path, capsys, "more than the 1 MiB")


def test_npz_bomb_in_a_subprocess_keeps_rss_small(inputs, tmp_path):
    """A 1 GiB deflated member (under 8 MiB on disk) is refused from its header; peak RSS stays < 500 MB."""
    scan = inputs / "scan.npz"
    n_patterns = 2**30 // (4 * N * N)
    arrays = _scan(xcoords=np.full(n_patterns, 40.0), ycoords=np.full(n_patterns, 40.0))  # consistent, so only size refuses
    with zipfile.ZipFile(scan, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, value in arrays.items():
            if key != "diff3d":
                buffer = io.BytesIO()
                np.save(buffer, value)
                zf.writestr(f"{key}.npy", buffer.getvalue())
        with zf.open("diff3d.npy", "w", force_zip64=True) as member:
            shape = (n_patterns, N, N)
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": shape})
            zeros = bytes(2**24)
            for _ in range(2**30 // len(zeros)):
                member.write(zeros)
    assert scan.stat().st_size < 8 * 2**20  # about 200 times smaller than what it declares
    code = (
        # VmHWM: this process image's peak RSS (ru_maxrss would include the forking test process's size)
        "import re, sys; from ptycholib.cli import main; status = main(sys.argv[1:]); "
        "print(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1)); sys.exit(status)"
    )
    env = dict(os.environ, **{_io.MAX_ARRAY_BYTES_ENV: str(2**28)})
    result = subprocess.run([sys.executable, "-c", code, "train", "--data", str(scan), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "more than the 256 MiB" in result.stderr
    assert int(result.stdout.split()[-1]) * 1024 < MEMORY_LIMIT  # VmHWM is in KiB
    assert not (tmp_path / "out").exists()


def test_huge_positions_without_object_are_refused_before_allocating(good_model, inputs, tmp_path, capsys):
    scan = _npz(inputs / "scan.npz", **_scan(objectGuess=None, xcoords=np.array([40.0, 1e5, 2e5, 40.0]),
                                             ycoords=np.array([40.0, 1e5, 2e5, 40.0])))
    _refused(_reconstruct(good_model, scan, tmp_path), tmp_path, capsys, "canvas would be")


# ------------------------------------------------------------------------------------------------
# configs


def _alias_bomb(folder):
    path = folder / "bomb.yaml"
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefgh"[i]
        lines.append(f"{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    lines.append("training: {accelerator: *h}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _duplicate_keys(folder):
    path = folder / "dup.yaml"
    path.write_text("training:\n  nepochs: 3\n  nepochs: 4\n")
    return path


def _json_nested(folder):
    path = folder / "deep.json"
    path.write_text("[" * 100000 + "]" * 100000)
    return path


@pytest.mark.parametrize(
    "build, expect",
    [(_alias_bomb, "aliases"), (_duplicate_keys, "duplicate key 'nepochs'"), (_json_nested, "not valid JSON")],
    ids=["alias-bomb", "duplicate-keys", "deep-json"],
)
def test_bad_config_files_are_refused(build, expect, inputs, tiny_data_dir, tmp_path, capsys):
    config = build(inputs)
    _refused(_train(tiny_data_dir / "train.npz", tmp_path, "--config", config), tmp_path, capsys, expect)


@pytest.mark.parametrize(
    "override, expect",
    [("accelerator=quantum", "accelerator='quantum'"), ("strategy=evil", "strategy='evil'"), ("seed=-1", "seed=-1"),
     ("output_dir=[1, 2]", "output_dir"), ("accelerator=[&a x, *a]", "aliases")],
)
def test_bad_settings_are_refused_before_any_output(override, expect, tiny_data_dir, tmp_path, capsys):
    _refused(_train(tiny_data_dir / "train.npz", tmp_path, override), tmp_path, capsys, expect)


# ------------------------------------------------------------------------------------------------
# outputs


def test_out_that_is_an_existing_file_is_refused(tiny_data_dir, tmp_path, capsys):
    (tmp_path / "out").write_text("keep me")
    _refused(_train(tiny_data_dir / "train.npz", tmp_path), tmp_path, capsys, "exists and is not a folder")
    assert (tmp_path / "out").read_text() == "keep me"


def test_out_that_is_a_folder_is_refused_by_reconstruct(good_model, tiny_data_dir, tmp_path, capsys):
    (tmp_path / "out" / "recon.npz").mkdir(parents=True)
    _refused(_reconstruct(good_model, tiny_data_dir / "test.npz", tmp_path), tmp_path, capsys, "is a folder")


@pytest.mark.parametrize("command", ["train", "reconstruct", "simulate"])
def test_unwritable_output_folder_is_refused(command, good_model, tiny_data_dir, tmp_path, capsys, monkeypatch):
    """A read-only file system (``os.access`` says no even for root) is refused before any work."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path).startswith(str(locked))
                        else real_access(path, mode, **kw))
    out = locked / "run"
    args = {
        "train": ["train", "--data", tiny_data_dir / "train.npz", "--out", out, "--no-progress"],
        "reconstruct": ["reconstruct", "--model", good_model, "--data", tiny_data_dir / "test.npz", "--out", out / "r.npz"],
        "simulate": ["simulate", "--n-train", "4", "--n-test", "4", "--out", out],
    }[command]
    _refused(args, tmp_path, capsys, "cannot write in")


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_simulate_step_px_must_be_finite_and_positive(value, tmp_path, capsys):
    _refused(["simulate", "--step-px", value, "--out", tmp_path / "out"], tmp_path, capsys, "--step-px")


# ------------------------------------------------------------------------------------------------
# ptychodus files (diffraction.h5 + product.h5), refused before ptychodus reads them


def _ptychodus_folder(folder, *, patterns=None, obj=True):
    rng = np.random.default_rng(5)
    with h5py.File(folder / "diffraction.h5", "w") as h5:
        h5["indexes"] = np.arange(3)
        h5["patterns"] = rng.poisson(5.0, (3, N, N)).astype(np.uint16) if patterns is None else patterns
        h5["bad_pixels"] = np.zeros((N, N), bool)
    with h5py.File(folder / "product.h5", "w") as h5:
        h5["probe_position_indexes"] = np.arange(3)
        h5["probe_position_x_m"] = np.zeros(3)
        h5["probe_position_y_m"] = np.zeros(3)
        h5["probe"] = np.ones((1, 1, N, N), np.complex64)
        if obj:
            h5["object"] = np.ones((1, 100, 100), np.complex64)
    return folder


def _ptychodus_cases(folder, case):
    if case == "product-without-object":
        return _ptychodus_folder(folder, obj=False), "product.h5 has no 'object' dataset"
    if case == "string-patterns":
        return _ptychodus_folder(folder, patterns=np.full((3, N, N), b"a")), "patterns in diffraction.h5 has dtype |S1"
    _ptychodus_folder(folder)
    diffraction = folder / "diffraction.h5"
    if case == "empty":
        diffraction.write_bytes(b"")
        return folder, "diffraction.h5 is empty"
    if case == "truncated":
        raw = diffraction.read_bytes()
        diffraction.write_bytes(raw[: len(raw) // 2])
        return folder, "diffraction.h5 is not a readable HDF5 file"
    if case == "external-link":
        with h5py.File(folder / "elsewhere.h5", "w") as other:
            other["patterns"] = np.zeros((3, N, N), np.uint16)
        with h5py.File(diffraction, "a") as h5:
            del h5["patterns"]
            h5["patterns"] = h5py.ExternalLink(str(folder / "elsewhere.h5"), "/patterns")
        return folder, "'patterns' in diffraction.h5 is an external link"
    raise AssertionError(case)


PTYCHODUS_CASES = ["empty", "truncated", "product-without-object", "string-patterns", "external-link"]


@pytest.mark.parametrize("case", PTYCHODUS_CASES)
def test_bad_ptychodus_files_are_refused_by_the_reader(case, inputs):
    from ptycholib.ptychodus import files

    folder, expect = _ptychodus_cases(inputs, case)
    with pytest.raises(ValueError) as raised:
        files.load_ptychodus_h5(folder / "diffraction.h5", folder / "product.h5")
    assert expect in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("case", PTYCHODUS_CASES)
def test_bad_ptychodus_files_are_refused_by_the_cli(case, good_model, inputs, tmp_path, capsys):
    folder, expect = _ptychodus_cases(inputs, case)
    args = ["ptychodus", "reconstruct", folder, tmp_path / "out", "--model", good_model]
    _refused(args, tmp_path, capsys, expect)


# ------------------------------------------------------------------------------------------------
# the error path itself


def test_unexpected_errors_say_internal_error_and_where_the_traceback_is(tmp_path, capsys, monkeypatch):
    from ptycholib.cli import config as config_command

    def broken(args):
        raise TypeError("a bug")

    monkeypatch.setattr(config_command, "run", broken)  # registered when main builds the parser
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert main(["config", "show"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error (TypeError: a bug)" in err[0] and "Traceback" not in err[0]
    written = list(tmp_path.glob("ptycholib-traceback-*.txt"))
    assert len(written) == 1 and str(written[0]) in err[0]
    assert "Traceback" in written[0].read_text() and "a bug" in written[0].read_text()


@pytest.mark.parametrize(
    "command, expect",
    [("train", "interrupted; resume with `ptycholib train --resume {out}`"), ("config", "interrupted")],
)
def test_ctrl_c_exits_130_with_one_line(command, expect, tmp_path, capsys, monkeypatch):
    import importlib

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(f"ptycholib.cli.{command}"), "run", interrupted)
    out = tmp_path / "run"
    args = ["train", "--data", "x.npz", "--out", str(out)] if command == "train" else ["config", "show"]
    assert main(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ptycholib {command}: {expect.format(out=out)}"]
    assert not out.exists()


def test_sigint_in_a_subprocess_exits_130():
    code = (
        "import os, signal, sys\n"
        "from ptycholib import cli\n"
        "from ptycholib.cli import config\n"
        "def run(args):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    signal.pause()\n"
        "config.run = run\n"
        "sys.exit(cli.main(['config', 'show']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 130
    assert result.stderr.strip() == "ptycholib config: interrupted"


def test_ctrl_c_turned_into_sys_exit_still_exits_130(tmp_path, capsys, monkeypatch):
    """Lightning catches KeyboardInterrupt and calls sys.exit(1); the CLI still reports an interruption."""
    import signal
    import time

    from ptycholib.cli import train as train_command

    def lightning_like(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        except KeyboardInterrupt:
            sys.exit(1)

    monkeypatch.setattr(train_command, "run", lightning_like)
    before = signal.getsignal(signal.SIGINT)
    assert main(["train", "--data", "x.npz", "--out", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        f"ptycholib train: interrupted; resume with `ptycholib train --resume {tmp_path / 'run'}`"
    ]
    assert signal.getsignal(signal.SIGINT) is before
    monkeypatch.setattr(train_command, "run", lambda args: sys.exit(3))
    with pytest.raises(SystemExit):  # a plain sys.exit is not an interruption
        main(["train", "--data", "x.npz", "--out", str(tmp_path / "run")])


def test_memory_error_is_an_expected_failure(tmp_path, capsys, monkeypatch):
    from ptycholib.cli import config as config_command

    def exhausted(args):
        raise MemoryError

    monkeypatch.setattr(config_command, "run", exhausted)
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ptycholib config: error: out of memory; the input is too large for this machine."]


def test_good_inputs_still_load(good_model, tiny_data_dir):
    """The guards refuse nothing that ptycholib itself writes."""
    assert archive.load_model(good_model).config == _config()
    assert data.load_npz(tiny_data_dir / "train.npz").n_positions > 0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0


@pytest.mark.parametrize("attack", ["external", "soft-link", "virtual"])
@pytest.mark.parametrize("command", ["train", "reconstruct"])
def test_hdf5_scans_that_reach_outside_the_file_are_refused(attack, command, good_model, inputs, tmp_path, capsys):
    """The HDF5 variant of the data contract (read by `ptycholib.stream`) gets the archive's structural checks."""
    import h5py

    arrays = _scan()
    secret = inputs / "secret.bin"
    secret.write_bytes(bytes(4 * 4 * N * N))
    scan = inputs / "scan.h5"
    with h5py.File(scan, "w") as handle:
        for key, value in arrays.items():
            if key == "metadata":
                handle.attrs["metadata"] = str(value)
            elif key != "diff3d":
                handle[key] = value
        if attack == "external":
            handle.create_dataset("diff3d", shape=(4, N, N), dtype=np.float32, external=[(str(secret), 0, 4 * 4 * N * N)])
        elif attack == "soft-link":
            handle["elsewhere"] = arrays["diff3d"]
            handle["diff3d"] = h5py.SoftLink("/elsewhere")
        else:
            layout = h5py.VirtualLayout(shape=(4, N, N), dtype=np.float32)
            layout[...] = h5py.VirtualSource(str(secret), "data", shape=(4, N, N))
            handle.create_virtual_dataset("diff3d", layout, fillvalue=0)
    args = _train(scan, tmp_path) if command == "train" else _reconstruct(good_model, scan, tmp_path)
    expect = {"external": "external storage", "soft-link": "soft link", "virtual": "virtual dataset"}[attack]
    _refused(args, tmp_path, capsys, expect)
