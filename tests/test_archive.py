import json
import zipfile

import numpy as np
import pytest

from ptycholib import archive
from ptycholib.archive import ArchiveError, ModelArchive
from ptycholib.config import Config, apply_overrides


def make_archive(rng, **overrides):
    cfg = apply_overrides(Config(), {"n_filters_scale": 1, **overrides})
    weights = {name: rng.normal(size=shape).astype(np.float32) for name, shape in archive.canonical_shapes(cfg.model).items()}
    n = cfg.model.N
    weights["physics.probe"] = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))).astype(np.complex64)
    return ModelArchive(config=cfg, weights=weights, input_scale=0.5, backend="torch")


@pytest.fixture
def saved(tmp_path, rng):
    model = make_archive(rng, gridsize=2)
    return model, archive.save_model(tmp_path / "wts.h5.zip", model)


def test_round_trip(saved):
    model, path = saved
    loaded = archive.load_model(path)
    assert loaded.config == model.config and loaded.backend == "torch" and loaded.input_scale == 0.5
    assert loaded.weights.keys() == model.weights.keys()
    for name, value in model.weights.items():
        np.testing.assert_array_equal(loaded.weights[name], value)
        assert loaded.weights[name].dtype == value.dtype
    assert loaded.intensity_scale == pytest.approx(np.exp(model.weights["physics.log_intensity_scale"]))
    manifest = archive.read_manifest(path)
    assert set(manifest["sha256"]) == {"config.json", "weights.h5"} and manifest["format_version"] == 1


def test_directory_gets_default_name(tmp_path, rng):
    path = archive.save_model(tmp_path, make_archive(rng))
    assert path.name == "wts.h5.zip"
    assert archive.load_model(tmp_path).config.model.N == 64


@pytest.mark.parametrize(
    "settings",
    [{"model.N": 128}, {"pad_object": False}, {"probe_big": False}, {"gridsize": 3, "neighbor_count": 9},
     {"gridsize": 2, "object_big": False}],
)
def test_canonical_shapes_follow_config(tmp_path, rng, settings):
    model = make_archive(rng, **settings)
    assert archive.load_model(archive.save_model(tmp_path / "m.zip", model)).config == model.config


def test_canonical_shapes_n64():
    shapes = archive.canonical_shapes(Config().model)
    assert shapes["encoder.0.conv0.weight"] == (64, 1, 3, 3)
    assert shapes["encoder.2.conv1.weight"] == (256, 256, 3, 3)
    assert shapes["decoder_amp.1.conv1.weight"] == (64, 64, 3, 3)
    assert shapes["head_phase.center.weight"] == (1, 60, 3, 3)
    assert shapes["head_amp.outer.conv0.weight"] == (64, 4, 3, 3)
    assert "encoder.3.conv0.weight" not in shapes


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        archive.load_model(tmp_path / "nope.zip")


def test_truncated(saved, tmp_path):
    _, path = saved
    cut = tmp_path / "cut.zip"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="truncated|not a readable zip"):
        archive.load_model(cut)


def _rewrite(path, out, replace):
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = replace.get(name, src.read(name))
            if data is not None:
                dst.writestr(name, data)
        for name, data in replace.items():
            if name not in src.namelist():
                dst.writestr(name, data)
    return out


def test_tampered_checksum(saved, tmp_path):
    _, path = saved
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    config["training"]["nepochs"] = 3
    bad = _rewrite(path, tmp_path / "bad.zip", {"config.json": json.dumps(config)})
    with pytest.raises(ArchiveError, match="checksum of config.json does not match"):
        archive.load_model(bad)


def test_newer_format(saved, tmp_path):
    _, path = saved
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    manifest["format_version"] = 99
    bad = _rewrite(path, tmp_path / "new.zip", {"manifest.json": json.dumps(manifest)})
    with pytest.raises(ArchiveError, match="format version 99; .* Upgrade ptycholib"):
        archive.load_model(bad)


def test_shape_mismatch(saved, tmp_path):
    _, path = saved
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
        manifest = json.loads(zf.read("manifest.json"))
    config["model"]["n_filters_scale"] = 2  # the stored weights were made for scale 1
    text = json.dumps(config).encode()
    import hashlib

    manifest["sha256"]["config.json"] = hashlib.sha256(text).hexdigest()
    bad = _rewrite(path, tmp_path / "shape.zip", {"config.json": text, "manifest.json": json.dumps(manifest)})
    with pytest.raises(ArchiveError, match="has shape .* but the config needs"):
        archive.load_model(bad)


def test_pickle_bearing_and_foreign_archives_refused(saved, tmp_path):
    _, path = saved
    pickled = _rewrite(path, tmp_path / "pickle.zip", {"extra/params.dill": b"\x80\x04K\x01."})
    with pytest.raises(ArchiveError, match="params.dill, which can hold pickled code"):
        archive.load_model(pickled)
    ptychopinn = tmp_path / "ptychopinn.zip"
    with zipfile.ZipFile(ptychopinn, "w") as zf:
        zf.writestr("manifest.dill", b"\x80\x04K\x01.")
        zf.writestr("autoencoder/params.dill", b"\x80\x04K\x01.")
    with pytest.raises(ArchiveError, match="not a ptycholib model archive: it holds .*manifest.dill.*never unpickles"):
        archive.load_model(ptychopinn)
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"models": ["autoencoder"], "version": "1.0"}))
    with pytest.raises(ArchiveError, match="expected 'ptycholib-model'"):
        archive.load_model(foreign)
    no_manifest = tmp_path / "plain.zip"
    with zipfile.ZipFile(no_manifest, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ArchiveError, match="no manifest.json"):
        archive.load_model(no_manifest)


def test_missing_member(saved, tmp_path):
    _, path = saved
    bad = _rewrite(path, tmp_path / "partial.zip", {"weights.h5": None})
    with pytest.raises(ArchiveError, match="lacks weights.h5"):
        archive.load_model(bad)


def test_failed_save_overwrites_nothing(saved, rng):
    model, path = saved
    before = path.read_bytes()
    broken = dict(model.weights)
    broken.pop("encoder.0.conv0.weight")
    with pytest.raises(ArchiveError, match="missing \\['encoder.0.conv0.weight'\\]"):
        archive.save_model(path, ModelArchive(model.config, broken, 0.5, "torch"))
    nan_weights = dict(model.weights, **{"encoder.0.conv0.bias": np.full_like(model.weights["encoder.0.conv0.bias"], np.nan)})
    with pytest.raises(ArchiveError, match="NaN or Inf"):
        archive.save_model(path, ModelArchive(model.config, nan_weights, 0.5, "torch"))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_weights_are_stored_as_float32_and_complex64(tmp_path, rng):
    model = make_archive(rng)
    wide = {name: value.astype(np.complex128 if name == "physics.probe" else np.float64) for name, value in model.weights.items()}
    path = archive.save_model(tmp_path / "wts.h5.zip", ModelArchive(model.config, wide, 0.5, "torch"))
    loaded = archive.load_model(path)
    assert {str(v.dtype) for k, v in loaded.weights.items() if k != "physics.probe"} == {"float32"}
    assert loaded.weights["physics.probe"].dtype == np.complex64


def test_unexpected_members_and_bad_manifest_fields(saved, tmp_path):
    _, path = saved
    extra = _rewrite(path, tmp_path / "extra.zip", {"notes.txt": b"hi"})
    with pytest.raises(ArchiveError, match=r"unexpected members \['notes.txt'\]"):
        archive.load_model(extra)
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    for field, value, message in (("format_version", 0, "format_version is '0'"),
                                  ("sha256", {"config.json": "x"}, "sha256 must map"),
                                  ("backend", "jax", "manifest backend is 'jax'")):
        bad = _rewrite(path, tmp_path / f"{field}.zip", {"manifest.json": json.dumps(dict(manifest, **{field: value}))})
        with pytest.raises(ArchiveError, match=message):
            archive.read_manifest(bad)
