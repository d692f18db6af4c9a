"""Train, reconstruct, evaluate: what the notebooks, the CLI and the ptychodus adapter call.

Everything here is NumPy plus one call into the backend chosen by the config (or by the caller), so a
model trained by one backend reconstructs with the other.
"""

from __future__ import annotations

import contextlib
import json
import time
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ptycholib import archive as archive_io
from ptycholib import distributed, forward, grouping, metrics, reassemble, stream, tracking
from ptycholib._io import atomic_write, open_npz
from ptycholib.archive import ModelArchive
from ptycholib.backends import get_backend

__all__ = [
    "GroupedData",
    "TrainedModel",
    "Reconstruction",
    "group_data",
    "inference_groups",
    "inference_batch_size",
    "prepare_training",
    "train_model",
    "build_backend_model",
    "reconstruct",
    "evaluate",
    "canvas_shape_for",
    "save_reconstruction",
    "load_reconstruction",
]


@dataclass(frozen=True)
class GroupedData:
    """Groups of a data set, ready for a backend (channels-first).

    Attributes
    ----------
    inputs : ndarray of shape (G, C, N, N), float32
        Network input ``g * a``.
    amplitudes : ndarray of shape (G, C, N, N), float32
        Measured amplitudes (count units, what the loss compares with).
    offsets : ndarray of shape (G, C, 2), float32
        Position minus group mean in pixels, last axis ``(x, y)``.
    indices : ndarray of shape (G, C), int64
        Scan positions of each group's members.
    target_patches : ndarray of shape (G, C, N, N), complex64, or None
        Ground-truth patches cut from the data's object (supervised training only).
    """

    inputs: np.ndarray
    amplitudes: np.ndarray
    offsets: np.ndarray
    indices: np.ndarray
    target_patches: np.ndarray | None = None


def group_data(data, groups, input_scale, *, with_targets=False, group_targets=False, input_transform="linear"):
    """Gather a data set into `GroupedData` for the given `grouping.Groups`.

    ``with_targets`` cuts the true patches at every member's position, ``(G, C, N, N)``; with
    ``group_targets`` it cuts one patch per group at the group's mean position, ``(G, 1, N, N)``: the
    target of a network that predicts one object per group (``object_big=False``).
    """
    amplitudes = data.amplitudes[groups.indices]
    targets = None
    if with_targets:
        if data.obj is None:
            raise ValueError("model_type='supervised' needs the true object (objectGuess) in the training data.")
        n = data.amplitudes.shape[-1]
        x_px, y_px = data.x_px[groups.indices], data.y_px[groups.indices]
        if group_targets:
            x_px, y_px = x_px.mean(axis=1, keepdims=True), y_px.mean(axis=1, keepdims=True)
        targets = forward.extract_patches(data.obj, x_px.reshape(-1), y_px.reshape(-1), n)
        targets = targets.reshape(x_px.shape + (n, n)).astype(np.complex64)
    return GroupedData(
        inputs=grouping.network_inputs(amplitudes, input_scale, input_transform),
        amplitudes=amplitudes.astype(np.float32),
        offsets=np.asarray(groups.offsets, dtype=np.float32),
        indices=np.asarray(groups.indices, dtype=np.int64),
        target_patches=targets,
    )


_PATTERNS_PER_CALL = 32  # per n_filters_scale; measured in `ptycholib bench inference` (docs/results.md)


def inference_batch_size(model_config, batch_size=0):
    """Groups per network call for inference: ``batch_size``, or when it is 0 one chosen for throughput.

    The automatic choice keeps about ``32 / n_filters_scale`` patterns per call (at least one
    group): small enough that a call's activations stay in the CPU caches, which on 2-core CPUs
    made torch 1.3-1.5x faster than 256-group batches (``ptycholib bench inference``); a GPU user
    may prefer a large explicit ``inference.batch_size``.
    """
    if batch_size:
        return int(batch_size)
    return max(1, _PATTERNS_PER_CALL // (model_config.n_filters_scale * model_config.n_channels))


def inference_groups(data, model_config, neighbor_count):
    """Groups for inference: every scan position seeds one group, so every position is predicted.

    For gridsize 1 the groups are the positions themselves. Groups never mix the objects of
    ``data.object_index``.
    """
    return grouping.group_neighbors(
        data.x_px, data.y_px, model_config.gridsize, neighbor_count=neighbor_count,
        n_groups=len(data.x_px), seed=0, sequential=True, object_index=data.object_index,
    )


@dataclass
class TrainedModel:
    """A trained model: its archive contents, per-epoch history and training time.

    Attributes
    ----------
    archive : ModelArchive
        Config, canonical weights, ``g`` and the backend; save it with `archive.save_model`.
    history : list of dict
        One record per epoch, keys `ptycholib.tracking.HISTORY_COLUMNS` (epoch, stage, learning_rate,
        physics_weight, loss, val_loss, deviance, val_deviance, amplitude_mae, val_amplitude_mae,
        best_epoch): the learning rate the epoch started with, the Poisson deviance per pixel (about 1
        at the noise floor), and the epoch with the lowest monitored loss so far (whose weights the
        archive holds when early stopping restored them).
    seconds : float
        Wall-clock training time.
    n_groups : int
        Groups trained on.
    run_id : str or None
        The MLflow run (``logger='mlflow'``; `ptycholib.tracking`), which holds the metrics,
        ``wts.h5.zip`` and ``history.csv``; None otherwise.
    """

    archive: ModelArchive
    history: list = field(default_factory=list)
    seconds: float = 0.0
    n_groups: int = 0
    run_id: str | None = None


def prepare_training(data, config, *, initial_weights=None):
    """Group the training data and build the untrained model, as `train_model` does before training.

    Returns
    -------
    backend : module
        `ptycholib.backends.get_backend` of ``config.training.backend``.
    model : the backend's PhysicsModel
        Initial weights from ``config.training.seed`` (or ``initial_weights``); the probe from the
        data; ``s`` from `ptycholib.forward.initial_intensity_scale`.
    grouped : GroupedData
        The training groups (with ground-truth targets for ``model_type='supervised'``).
    input_scale : float
        ``g`` of SPEC 4.2, computed on this data.

    See Also
    --------
    ptycholib.batching.prepare_training_arrays : the next step, inside the backend's ``train``:
        checks the grouped arrays, picks the loss's targets, plans the epochs and splits off validation.
    """
    model_config, training = config.model, config.training
    distributed.prepare(training)  # TF's multi-worker strategy must exist before the model does
    backend = get_backend(training.backend)
    if isinstance(data, stream.PatternSource):  # patterns stay on disk: batches are read (ptycholib.stream)
        return (backend, *_streamed_training(backend, data, config, initial_weights))
    groups = grouping.group_neighbors(
        data.x_px, data.y_px, model_config.gridsize, neighbor_count=training.neighbor_count,
        n_groups=training.n_groups, seed=training.seed, sequential=training.sequential_sampling,
        object_index=data.object_index,
    )
    input_scale = grouping.input_scale(data.amplitudes, model_config.input_transform)
    grouped = group_data(
        data, groups, input_scale, with_targets=model_config.model_type == "supervised",
        group_targets=model_config.n_object_channels == 1, input_transform=model_config.input_transform,
    )
    intensity_scale = forward.initial_intensity_scale(data.amplitudes, data.probe, model_config.probe_scale,
                                                      bad_pixels=data.bad_pixels)
    model = backend.network.build_model(model_config, data.probe, intensity_scale, seed=training.seed)
    if initial_weights is not None:
        backend.network.set_weights(model, initial_weights)
    return backend, model, grouped, input_scale


def _streamed_training(backend, source, config, initial_weights):
    """`prepare_training` for a `ptycholib.stream.PatternSource`: the same groups, g and s0, batches read lazily."""
    model_config, training = config.model, config.training
    groups = grouping.group_neighbors(
        source.x_px, source.y_px, model_config.gridsize, neighbor_count=training.neighbor_count,
        n_groups=training.n_groups, seed=training.seed, sequential=training.sequential_sampling,
        object_index=source.object_index,
    )
    input_scale, intensity_scale = stream.scan_statistics(source, model_config.probe_scale,
                                                          input_transform=model_config.input_transform)
    supervised = model_config.model_type == "supervised"
    streamed = stream.StreamedGroups(source, groups, input_scale, input_transform=model_config.input_transform,
                                     target_channels=model_config.n_object_channels if supervised else None)
    grouped = GroupedData(inputs=streamed, amplitudes=None, offsets=np.asarray(groups.offsets, dtype=np.float32),
                          indices=np.asarray(groups.indices, dtype=np.int64))
    model = backend.network.build_model(model_config, source.probe, intensity_scale, seed=training.seed)
    if initial_weights is not None:
        backend.network.set_weights(model, initial_weights)
    return model, grouped, input_scale


def train_model(data, config, *, initial_weights=None, log_dir=None, progress=True, callback=None, resume=False):
    """Train a model on ``data`` with the backend of ``config.training.backend``.

    Parameters
    ----------
    data : ptycholib.data.PtychoData
        Training scan (amplitudes, positions, probe; the object too for ``model_type='supervised'``).
        With several objects (``data.object_index``, e.g. ``simulate --n-objects K``) every group
        stays within one object.
        A `ptycholib.stream.PatternSource` trains on the same groups and batches with the patterns
        read from the file batch by batch (scans larger than memory).
    config : Config
    initial_weights : dict, optional
        Canonical weights to start from (e.g. another backend's initial weights, for parity runs).
    log_dir : path, optional
        Where the backend writes its CSV log and checkpoints.
    progress : bool
        Show a progress bar.
    callback : callable, optional
        Called with each epoch's record (ptychodus streams losses through it).
    resume : bool
        Continue the interrupted run whose checkpoints are in ``log_dir`` (same data and config)
        from its last complete epoch.

    Returns
    -------
    TrainedModel
        Trained with ``data.bad_pixels`` left out of the loss and of the intensity-scale fit.

    Notes
    -----
    With ``training.logger='mlflow'`` one MLflow run (`ptycholib.tracking.start_run`) gets the
    configs, each epoch's record and, at the end, ``wts.h5.zip`` and ``history.csv`` as artifacts;
    its id is ``TrainedModel.run_id``.
    """
    backend, model, grouped, input_scale = prepare_training(data, config, initial_weights=initial_weights)
    training = config.training
    tracked = training.logger == "mlflow"
    with tracking.start_run(config.model, training, log_dir) if tracked else contextlib.nullcontext() as run:
        start = time.perf_counter()
        history = backend.training.train(
            model, grouped.inputs, grouped.offsets, grouped.amplitudes, training,
            target_patches=grouped.target_patches, validation_fraction=training.validation_fraction,
            log_dir=log_dir, progress=progress, callback=callback, mlflow_run=run,
            bad_pixels=data.bad_pixels, resume=resume,
        )
        seconds = time.perf_counter() - start
        weights = backend.network.get_weights(model)
        trained = TrainedModel(
            archive=ModelArchive(config=config, weights=weights, input_scale=input_scale, backend=backend.name),
            history=history, seconds=seconds, n_groups=len(grouped.inputs),
            run_id=None if run is None else run.run_id,
        )
        if run is not None:
            run.log_trained_model(trained.archive, history)
    return trained


def _as_archive(model):
    if isinstance(model, TrainedModel):
        return model.archive
    if isinstance(model, ModelArchive):
        return model
    if isinstance(model, (str, Path)):
        return archive_io.load_model(model)
    raise TypeError(f"model must be a TrainedModel, a ModelArchive or a path to an archive, not {type(model).__name__}.")


def build_backend_model(model, backend=None):
    """Build a backend model from an archive (either backend's) and return ``(backend, model)``."""
    saved = _as_archive(model)
    backend = get_backend(backend or saved.backend)
    net = backend.network.build_model(saved.config.model, saved.probe, saved.intensity_scale)
    backend.network.set_weights(net, saved.weights)
    return backend, net


_MAX_CANVAS_PIXELS = 2**28
"""Largest object canvas `canvas_shape_for` derives from positions alone (about 2 GiB as complex64)."""


def canvas_shape_for(data):
    """Object canvas of a data set: the true object's shape, or the scan's extent plus a half window.

    Raises
    ------
    ValueError
        Without ``objectGuess``, when the positions imply a canvas above ``_MAX_CANVAS_PIXELS`` (2**28)
        (checked before anything is allocated).
    """
    if data.obj is not None:
        return data.obj.shape
    half = data.amplitudes.shape[-1] // 2
    rows, cols = float(np.ceil(data.y_px.max())) + half + 2, float(np.ceil(data.x_px.max())) + half + 2
    if rows * cols > _MAX_CANVAS_PIXELS:
        raise ValueError(
            f"positions reach x={data.x_px.max():g}, y={data.y_px.max():g} px, so the object canvas would be "
            f"{rows:.0f} x {cols:.0f} px, more than the {_MAX_CANVAS_PIXELS} px ptycholib builds from positions "
            "alone; check that positions are in object pixels (not metres or nm), or give objectGuess."
        )
    return int(rows), int(cols)


@dataclass
class Reconstruction:
    """An object reconstructed on the data's object grid.

    Attributes
    ----------
    obj : ndarray of shape (rows, cols), complex64
        Reassembled object (0 where nothing was reconstructed).
    weights : ndarray of shape (rows, cols)
        Accumulated reassembly weights; ``weights > 0`` is the reconstructed region.
    object_patches : ndarray of shape (G, C, N, N), complex64
        Per-group network outputs.
    indices : ndarray of shape (G, C), int64
        Scan position of every patch.
    region : ndarray of shape (rows, cols), bool
        The scanned region: pixels under some position's central ``crop_size`` window (what the
        scores use, for every weighting).
    inference_seconds, reassembly_seconds : float
        Time spent in the network and in reassembly.
    total_seconds : float
        Grouping, input scaling, network and reassembly (model construction excluded).
    backend : str
    """

    obj: np.ndarray
    weights: np.ndarray
    region: np.ndarray
    object_patches: np.ndarray
    indices: np.ndarray
    inference_seconds: float
    reassembly_seconds: float
    total_seconds: float
    backend: str


def reconstruct(model, data, *, backend=None, inference=None, progress=False):
    """Reconstruct the object of a scan with a trained model (from either backend).

    Parameters
    ----------
    model : TrainedModel, ModelArchive or path
        A model archive (``wts.h5.zip``) or its loaded contents.
    data : ptycholib.data.PtychoData or ptycholib.stream.PatternSource
        A source is reconstructed chunk by chunk (`ptycholib.chunked.reconstruct_chunked`: the same
        result in bounded memory, without ``object_patches``).
    backend : str, optional
        Backend to predict with; default ``inference.backend``, else the one that trained the model.
    inference : InferenceConfig, optional
        Batch size (0: `inference_batch_size`), precision and reassembly (crop size, weighting);
        default: the archive's.
    progress : bool
        Show a progress bar while predicting.

    Returns
    -------
    Reconstruction
    """
    if isinstance(data, stream.PatternSource):  # chunk by chunk, in bounded memory
        from ptycholib import chunked

        return chunked.reconstruct_chunked(model, data, backend=backend, inference=inference, progress=progress)
    saved = _as_archive(model)
    inference = inference or saved.config.inference
    if data.amplitudes.shape[-1] != saved.config.model.N:
        raise ValueError(
            f"the data's patterns are {data.amplitudes.shape[-1]} px but the model was trained for "
            f"N={saved.config.model.N}."
        )
    canvas_shape = canvas_shape_for(data)  # refuses absurd positions before any work
    chosen, net = build_backend_model(saved, backend or inference.backend)
    begin = time.perf_counter()
    groups = inference_groups(data, saved.config.model, saved.config.training.neighbor_count)
    grouped = group_data(data, groups, saved.input_scale, input_transform=saved.config.model.input_transform)
    start = time.perf_counter()
    patches = chosen.training.predict_patches(
        net, grouped.inputs, grouped.offsets, batch_size=inference_batch_size(saved.config.model, inference.batch_size),
        precision=inference.precision, progress=progress,
    )
    inference_seconds = time.perf_counter() - start
    start = time.perf_counter()
    obj, weights = reassemble.reassemble_patches(
        patches, data.x_px[grouped.indices], data.y_px[grouped.indices], canvas_shape,
        crop_size=inference.crop_size, weighting=inference.weighting, probe=saved.probe,
    )
    reassembly_seconds = time.perf_counter() - start
    region = metrics.scanned_region_mask(data.x_px, data.y_px, obj.shape, inference.crop_size)
    return Reconstruction(obj=obj.astype(np.complex64), weights=weights, region=region, object_patches=patches,
                          indices=grouped.indices, inference_seconds=inference_seconds,
                          reassembly_seconds=reassembly_seconds, total_seconds=time.perf_counter() - begin,
                          backend=chosen.name)


def evaluate(reconstruction, data, *, mask=None, max_shift_px=metrics.DEFAULT_MAX_SHIFT_PX, **options):
    """Score a reconstruction against the data's true object (`metrics.evaluate_reconstruction`).

    Parameters
    ----------
    reconstruction : Reconstruction or ndarray of shape (rows, cols), complex
    data : ptycholib.data.PtychoData
        Must hold the true object.
    mask : ndarray of shape (rows, cols), bool, optional
        Region to score; default the scanned region of a `Reconstruction` (``.region``).
    max_shift_px : float or None
        Cap on the registration shift (norm, pixels; default 3, ``None`` for no cap); the scores
        report ``shift_px``, ``max_shift_px`` and ``shift_capped``.
    **options
        ``register``, ``remove_ramp``, ``upsample_factor``.
    """
    if data.obj is None:
        raise ValueError("the data has no true object (objectGuess); nothing to evaluate against.")
    if isinstance(reconstruction, Reconstruction):
        mask = reconstruction.region if mask is None else mask
        reconstruction = reconstruction.obj
    return metrics.evaluate_reconstruction(
        reconstruction, data.obj, mask=mask, max_shift_px=max_shift_px, **options
    )


def save_reconstruction(reconstruction, path, **metadata):
    """Write ``object`` (complex64 (H, W)), ``weights`` and JSON ``metadata`` to an NPZ, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"backend": reconstruction.backend, "inference_seconds": reconstruction.inference_seconds,
            "reassembly_seconds": reconstruction.reassembly_seconds, **metadata}
    metadata_json = np.array(json.dumps(info))
    with atomic_write(path, "wb") as handle:
        np.savez(handle, object=reconstruction.obj, weights=reconstruction.weights, metadata=metadata_json)
    return path


def load_reconstruction(path):
    """Read a reconstruction NPZ (``object`` complex (H, W), optional JSON ``metadata``); never unpickles.

    Returns
    -------
    obj : ndarray of shape (H, W), complex
    metadata : dict
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reconstruction file {path} does not exist.")
    try:
        with open_npz(path, what="reconstruction file") as npz:
            if "object" not in npz.files:
                found = ", ".join(sorted(npz.files)) or "nothing"
                raise KeyError(f"{path.name} has no 'object' array (found: {found}); it is not a reconstruction.")
            obj = npz["object"]
            raw = npz["metadata"] if "metadata" in npz.files else None
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path.name} is not a readable NPZ file ({exc}); is it truncated?") from None
    metadata = {}
    if raw is not None:
        try:
            metadata = json.loads(str(raw[()]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"metadata in {path.name} is not a JSON string ({exc}).") from None
    if obj.ndim != 2 or not np.iscomplexobj(obj):
        raise ValueError(f"object in {path.name} has shape {obj.shape} and dtype {obj.dtype}; expected complex (H, W).")
    if not np.all(np.isfinite(obj)):
        raise ValueError(f"object in {path.name} has {int(np.sum(~np.isfinite(obj)))} NaN or infinite values.")
    return obj, metadata


def fine_tuning_start(parent, data, config, *, parent_path=None):
    """Prepare fine-tuning an archived model on a scan: the config to train with and the weights to start from.

    Parameters
    ----------
    parent : ModelArchive
        The model to continue from (either backend's).
    data : ptycholib.data.PtychoData
        The scan to adapt to.
    config : Config
        Training and inference sections to use; its model section must equal the archive's (the
        architecture is the archive's).
    parent_path : path, optional
        The archive file, recorded (name and SHA-256) as the fine-tuned model's ``parent``.

    Returns
    -------
    config : Config
    initial_weights : dict
        The archive's canonical weights (intensity scale included) with the scan's own probe: the
        probe is the scan's illumination, which the physics must model.
    parent_record : dict or None
        ``{"name", "sha256"}`` for `ModelArchive.parent`.

    Raises
    ------
    ValueError
        The model section differs from the archive's, or the scan's patterns are not the archive's N.
    """
    if config.model != parent.config.model:
        changed = [f.name for f in fields(config.model)
                   if getattr(config.model, f.name) != getattr(parent.config.model, f.name)]
        raise ValueError(f"fine-tuning keeps the archived model's architecture; refused change of {', '.join(changed)}.")
    if data.patch_size != parent.config.model.N:
        raise ValueError(f"the archived model was trained for N={parent.config.model.N} but the scan holds "
                         f"{data.patch_size} px patterns.")
    weights = {**parent.weights, "physics.probe": np.asarray(data.probe, dtype=parent.probe.dtype)}
    record = None
    if parent_path is not None:
        path = Path(parent_path)
        path = path / archive_io.DEFAULT_NAME if path.is_dir() else path
        record = {"name": path.name, "sha256": archive_io.file_sha256(path)}
    return config, weights, record
