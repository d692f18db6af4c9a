"""One model archive for both backends (SPEC section 6): a zip of JSON and HDF5, never a pickle.

Layout of ``wts.h5.zip`` (the default name keeps PtychoPINN's convention)::

    manifest.json   format name and version, backend that trained it, library version, creation time,
                    SHA-256 of every other member
    config.json     the full Config (model, training, inference sections)
    weights.h5      /weights/<canonical name> (conv kernels (out, in, kh, kw)), attributes input_scale
                    (g) and intensity_scale (s, also stored as weights/physics.log_intensity_scale)

Loading checks the manifest, every checksum, the format version and every weight's shape against the
architecture the config describes (docs/architecture.md), and refuses members that could hold a pickle.
It reads nothing it has not bounded first: duplicate or unexpected members are refused, each member's
declared size is checked before it is decompressed (manifest and config: at most 1 MiB; weights: what
the config's architecture implies), and ``weights.h5`` may hold only the canonical datasets, stored in
the file (no external storage, virtual datasets, soft or external links), real float32 (the probe
complex64), checked by name, shape and dtype before any is read (docs/robustness.md).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptycholib import __version__
from ptycholib._checks import check_same_keys
from ptycholib._io import one_line, h5_member, atomic_write, check_h5_tree, format_bytes, open_h5
from ptycholib.config import BACKENDS, Config, ConfigError, config_from_dict, config_to_dict

__all__ = [
    "ArchiveError",
    "ModelArchive",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DEFAULT_NAME",
    "save_model",
    "load_model",
    "read_manifest",
    "file_sha256",
    "canonical_shapes",
]

FORMAT_NAME = "ptycholib-model"
FORMAT_VERSION = 1
DEFAULT_NAME = "wts.h5.zip"
_MEMBERS = ("config.json", "weights.h5")
_PICKLE_SUFFIXES = (".dill", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib")
_SMALL_MEMBER_BYTES = 1 << 20  # manifest.json and config.json
_WEIGHT_DTYPES = {"physics.probe": np.dtype(np.complex64)}  # every other weight: float32


class ArchiveError(ValueError):
    """A model archive is missing, truncated, tampered with, foreign, too new or does not match its config."""


@dataclass(frozen=True)
class ModelArchive:
    """A loaded (or to-be-saved) model: everything needed to predict with either backend.

    Attributes
    ----------
    config : Config
    weights : dict of str to ndarray
        Canonical weights (docs/architecture.md), including ``physics.log_intensity_scale`` and
        ``physics.probe``.
    input_scale : float
        SPEC's g: network input = g * measured amplitudes.
    backend : str
        Backend that trained the model.
    manifest : dict
    parent : dict or None
        For a fine-tuned model (``ptycholib train --init``): ``{"name": ..., "sha256": ...}`` of the
        archive file it continued from; written to and read from the manifest's ``parent``.
    """

    config: Config
    weights: dict
    input_scale: float
    backend: str
    manifest: dict = field(default_factory=dict)
    parent: dict | None = None

    @property
    def intensity_scale(self):
        """SPEC's s = exp(physics.log_intensity_scale)."""
        return float(np.exp(self.weights["physics.log_intensity_scale"]))

    @property
    def probe(self):
        """The probe, (N, N) complex64, on the object grid before normalisation."""
        return self.weights["physics.probe"]


def _conv(prefix, n_in, n_out):
    return {f"{prefix}.weight": (n_out, n_in, 3, 3), f"{prefix}.bias": (n_out,)}


def canonical_shapes(model_config):
    """Return ``{name: shape}`` of every canonical weight the architecture of ``model_config`` has.

    Follows docs/architecture.md; both backends' ``get_weights`` must produce exactly these keys.
    """
    s = model_config.n_filters_scale
    n = model_config.N
    channels, outputs = model_config.n_channels, model_config.n_object_channels
    n_blocks = int(round(math.log2(n))) - 3  # 64 -> 3, 128 -> 4, 256 -> 5
    encoder = [w * s for w in (8, 16, 32, 64, 128)[5 - n_blocks :]]
    decoder = [w * s for w in (256, 128, 64, 32)[4 - (n_blocks - 1) :]]
    shapes = {}
    width_in = channels
    for i, width in enumerate(encoder):
        shapes |= _conv(f"encoder.{i}.conv0", width_in, width) | _conv(f"encoder.{i}.conv1", width, width)
        width_in = width
    features = decoder[-1]
    for head in ("amp", "phase"):
        width_in = encoder[-1]
        for i, width in enumerate(decoder):
            shapes |= _conv(f"decoder_{head}.{i}.conv0", width_in, width) | _conv(f"decoder_{head}.{i}.conv1", width, width)
            width_in = width
        if model_config.pad_object:
            shapes |= _conv(f"head_{head}.center", features - 4, outputs)
            if model_config.probe_big:
                shapes |= _conv(f"head_{head}.outer.conv0", 4, 32 * s) | _conv(f"head_{head}.outer.conv1", 32 * s, 32 * s)
                shapes |= _conv(f"head_{head}.outer.out", 32 * s, outputs)
        else:
            shapes |= _conv(f"head_{head}.full.conv0", features, 32 * s) | _conv(f"head_{head}.full.conv1", 32 * s, 32 * s)
            shapes |= _conv(f"head_{head}.full.out", 32 * s, outputs)
    shapes["physics.log_intensity_scale"] = ()
    shapes["physics.probe"] = (n, n)
    return shapes


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _weights_bytes(weights, input_scale):
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        group = handle.create_group("weights")
        for name in sorted(weights):
            group.create_dataset(name, data=np.asarray(weights[name], dtype=_weight_dtype(name)))
        handle.attrs["input_scale"] = float(input_scale)
        handle.attrs["intensity_scale"] = float(np.exp(weights["physics.log_intensity_scale"]))
    return buffer.getvalue()


def _weight_dtype(name):
    return _WEIGHT_DTYPES.get(name, np.dtype(np.float32))


def _weights_size_limit(model_config):
    """Most bytes a ``weights.h5`` of this architecture may take: the raw weights twice, plus HDF5 overhead."""
    shapes = canonical_shapes(model_config)
    raw = sum(math.prod(shape) * _weight_dtype(name).itemsize for name, shape in shapes.items())
    return 2 * raw + 8192 * len(shapes) + _SMALL_MEMBER_BYTES


def _check_weights(weights, model_config, where):
    expected = canonical_shapes(model_config)
    check_same_keys(
        weights, expected,
        f"{where}: weights do not match the configured architecture (N={model_config.N}, "
        f"gridsize={model_config.gridsize}, n_filters_scale={model_config.n_filters_scale}, "
        f"object_big={model_config.object_big})",
        error=ArchiveError,
    )
    for name, shape in expected.items():
        actual = tuple(np.shape(weights[name]))
        if actual != shape:
            raise ArchiveError(f"{where}: weight {name} has shape {actual} but the config needs {shape}.")
        if not np.all(np.isfinite(weights[name])):
            raise ArchiveError(f"{where}: weight {name} contains NaN or Inf.")


def save_model(path, archive):
    """Write a `ModelArchive` to ``path`` atomically (temporary file, then rename).

    If ``path`` is a directory, the archive is written to ``path / "wts.h5.zip"``. On any error the
    previous file at ``path`` (if any) is left untouched.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_NAME
    _check_weights(archive.weights, archive.config.model, "save_model")
    if not (np.isfinite(archive.input_scale) and archive.input_scale > 0):
        raise ArchiveError(f"save_model: input_scale={archive.input_scale!r} must be a positive number.")
    members = {
        "config.json": (json.dumps(config_to_dict(archive.config), indent=2) + "\n").encode(),
        "weights.h5": _weights_bytes(archive.weights, archive.input_scale),
    }
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": archive.backend,
        "library_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sha256": {name: _sha256(data) for name, data in members.items()},
    }
    if archive.parent is not None:
        manifest["parent"] = {"name": str(archive.parent["name"]), "sha256": str(archive.parent["sha256"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle, zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2) + "\n")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _open(path):
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"model archive {path} does not exist.")
    if path.stat().st_size == 0:
        raise ArchiveError(f"{path} is empty (0 bytes); it is not a model archive.")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        if isinstance(exc, (PermissionError, IsADirectoryError)):
            raise
        raise ArchiveError(f"{path} is not a readable zip archive ({one_line(exc)}; truncated or not a model file).") from None
    return path, zf


def _read_member(path, zf, name, limit):
    """Read one member after checking its declared (decompressed) size against ``limit``."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise ArchiveError(
            f"{path}: member {name} declares {format_bytes(info.file_size)} uncompressed, more than the "
            f"{format_bytes(limit)} it can need; the archive is corrupt or hostile."
        )
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ArchiveError(f"{path}: member {name} is unreadable ({one_line(exc)}); the file is truncated or corrupt.") from None


def read_manifest(path):
    """Return the manifest of an archive after checking its format (no weights are read)."""
    path, zf = _open(path)
    with zf:
        return _manifest(path, zf)


def _manifest(path, zf):
    listed = zf.namelist()
    names = set(listed)
    if len(names) != len(listed):
        duplicates = sorted({name for name in listed if listed.count(name) > 1})
        raise ArchiveError(f"{path} has duplicate members {duplicates}; the archive was tampered with.")
    risky = sorted(n for n in names if n.lower().endswith(_PICKLE_SUFFIXES))
    if "manifest.json" not in names:
        if risky:
            raise ArchiveError(
                f"{path} is not a ptycholib model archive: it holds {', '.join(risky[:3])} (pickles, as in "
                "PtychoPINN's wts.h5.zip); ptycholib never unpickles. Retrain with ptycholib or export the "
                "weights to ptycholib's canonical layout."
            )
        raise ArchiveError(f"{path} has no manifest.json; it is not a ptycholib model archive.")
    if risky:
        raise ArchiveError(
            f"{path} contains {', '.join(risky)}, which can hold pickled code; ptycholib never unpickles. "
            "Re-export the model with ptycholib.archive.save_model."
        )
    unexpected = sorted(names - {"manifest.json", *_MEMBERS})
    if unexpected:
        raise ArchiveError(f"{path} holds unexpected members {unexpected[:5]}; a model archive holds only manifest.json, "
                           f"{', '.join(_MEMBERS)}.")
    try:
        manifest = json.loads(_read_member(path, zf, "manifest.json", _SMALL_MEMBER_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ArchiveError(f"{path}: manifest.json is unreadable ({one_line(exc)}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ArchiveError(f"{path}: manifest format is {str(found)[:80]!r}, expected {FORMAT_NAME!r}.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArchiveError(f"{path}: manifest format_version is {str(version)[:80]!r}; it must be an integer >= 1.")
    if version > FORMAT_VERSION:
        raise ArchiveError(
            f"{path} has format version {version!r}; this ptycholib ({__version__}) reads up to "
            f"{FORMAT_VERSION}. Upgrade ptycholib to load it."
        )
    checksums = manifest.get("sha256")
    if not (isinstance(checksums, dict) and all(isinstance(key, str) and isinstance(value, str) and len(value) == 64
                                                for key, value in checksums.items())):
        raise ArchiveError(f"{path}: manifest sha256 must map member names to 64-character hex strings; "
                           f"got {str(checksums)[:80]!r}.")
    if manifest.get("backend") not in BACKENDS:
        raise ArchiveError(f"{path}: manifest backend is {str(manifest.get('backend'))[:80]!r}; expected one of "
                           f"{', '.join(BACKENDS)}.")
    return manifest


def load_model(path):
    """Load a model archive written by `save_model` (by either backend).

    Raises
    ------
    FileNotFoundError
        No such file.
    ArchiveError
        Not a zip or truncated; foreign (no ptycholib manifest, or members that may hold pickles);
        newer format version; a missing member or a SHA-256 mismatch (tampered); a config that
        fails validation; weights whose names or shapes do not match the config.
    """
    path, zf = _open(path)
    with zf:
        manifest = _manifest(path, zf)
        checksums = manifest["sha256"]
        for name in _MEMBERS:
            if name not in zf.namelist() or name not in checksums:
                raise ArchiveError(f"{path} lacks {name}; the archive is incomplete.")
        text = _checked_member(path, zf, "config.json", _SMALL_MEMBER_BYTES, checksums)
        try:
            config = config_from_dict(json.loads(text), source=f"{path}:config.json")
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ConfigError) as exc:
            raise ArchiveError(f"{path}: invalid config.json ({one_line(exc)}).") from None
        raw = _checked_member(path, zf, "weights.h5", _weights_size_limit(config.model), checksums)
    weights, input_scale = _read_weights(raw, config.model, path)
    parent = manifest.get("parent")
    if parent is not None and not (isinstance(parent, dict) and all(isinstance(parent.get(k), str)
                                                                     for k in ("name", "sha256"))):
        raise ArchiveError(f"{path}: manifest parent must be {{'name': str, 'sha256': str}}; got {parent!r}.")
    return ModelArchive(config=config, weights=weights, input_scale=input_scale, backend=manifest.get("backend", ""),
                        manifest=manifest, parent=parent)


def _checked_member(path, zf, name, limit, checksums):
    data = _read_member(path, zf, name, limit)
    if _sha256(data) != checksums[name]:
        raise ArchiveError(f"{path}: checksum of {name} does not match the manifest; the archive was modified.")
    return data


def _read_weights(raw, model_config, path):
    """Read ``weights.h5`` bytes: structure, names, shapes and dtypes checked before any weight is read."""
    import h5py

    where = f"{path}:weights.h5"
    try:
        handle = open_h5(io.BytesIO(raw), where)
    except ValueError as exc:
        raise ArchiveError(str(exc)) from None
    try:
        with handle:
            if set(handle) != {"weights"}:
                raise ArchiveError(f"{where} holds {sorted(handle)[:5]}; a model's weights file holds only the group 'weights'.")
            group = h5_member(handle, "weights", where)
            if not isinstance(group, h5py.Group):
                raise ArchiveError(f"{where}: 'weights' is not a group.")
            datasets = check_h5_tree(group, where, kinds="fc", max_depth=0)
            found = {name.rpartition("/")[2]: dataset for name, dataset in datasets.items()}
            check_same_keys(found, canonical_shapes(model_config), f"{where}: weights do not match the configured "
                            f"architecture (N={model_config.N}, gridsize={model_config.gridsize}, n_filters_scale="
                            f"{model_config.n_filters_scale})", error=ArchiveError)
            for name, shape in canonical_shapes(model_config).items():
                dataset = found[name]
                if dataset.shape != shape or dataset.dtype != _weight_dtype(name):
                    raise ArchiveError(f"{where}: weight {name} has shape {dataset.shape} and dtype {dataset.dtype} but the "
                                       f"config needs {shape} {_weight_dtype(name)}.")
            weights = {name: np.asarray(dataset[()]) for name, dataset in found.items()}
            input_scale = handle.attrs.get("input_scale")
    except ValueError as exc:  # check_h5_tree's refusals; ArchiveError passes through unchanged
        raise exc if isinstance(exc, ArchiveError) else ArchiveError(str(exc)) from None
    except (OSError, RuntimeError) as exc:  # h5py's errors on corrupt structures
        raise ArchiveError(f"{where} is corrupt ({one_line(exc)}).") from None
    try:
        input_scale = float(np.asarray(input_scale).item())
    except (TypeError, ValueError):
        input_scale = math.nan
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise ArchiveError(f"{where}: attribute input_scale must be a positive number; got {input_scale!r}.")
    _check_weights(weights, model_config, str(path))
    return weights, input_scale


def file_sha256(path):
    """Return the SHA-256 (hex) of a file's bytes, read in chunks (the parent checksum of a fine-tuned model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
