"""Reconstruction chunk by chunk, and split over processes by position ranges, then merged.

`ptycholib.workflow.reconstruct` holds the whole scan: patterns, network inputs and predicted patches.
Here the patterns are read from a `ptycholib.stream.PatternSource` a chunk of groups at a time; each
chunk is predicted and scattered onto two canvases, the reassembly numerator ``sum_k S_k[w O_k]`` and
denominator ``sum_k S_k[w]`` (`ptycholib.reassemble.reassemble_patches`, Notes), which are summed over
chunks and divided once at the end. Memory is the canvases plus one chunk, whatever the scan's size.

Grouping needs positions only (small, held in memory): the groups are those of the in-memory path
(`ptycholib.workflow.inference_groups`, group ``i`` seeded by position ``i``), and chunks are whole
multiples of the prediction batch, so the network sees exactly the batches it sees in memory. The
result equals the in-memory one up to the order of the float64 canvas sums (about 1e-16 relative).

Split inference: `reconstruct_partial` does the same for the groups seeded by positions
``start:stop`` and returns the canvases (`PartialCanvas`, saved with `save_partial`);
`merge_partials` adds the parts' canvases and divides, which is the single-process computation
regrouped (docs/cluster.md, "Split inference").
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptycholib import grouping, metrics, reassemble
from ptycholib._io import atomic_write
from ptycholib.stream import DEFAULT_CHUNK_SIZE

__all__ = [
    "PartialCanvas",
    "parse_positions",
    "reconstruct_partial",
    "reconstruct_chunked",
    "divide_canvases",
    "save_partial",
    "load_partial",
    "merge_partials",
]

_PARTIAL_FORMAT = "ptycholib partial reconstruction"


@dataclass
class PartialCanvas:
    """The reassembly canvases of the groups seeded by positions ``start:stop`` of a scan.

    Attributes
    ----------
    numerator : ndarray of shape (rows, cols), complex128
        ``sum_k S_k[w O_k]`` over this part's patches.
    denominator : ndarray of shape (rows, cols), float64
        ``sum_k S_k[w]``.
    region : ndarray of shape (rows, cols), bool
        Pixels under this part's central ``crop_size`` windows (`ptycholib.metrics.scanned_region_mask`).
    start, stop : int
        The positions whose groups this part predicted.
    n_positions : int
        Positions of the whole scan.
    metadata : dict
        ``backend``, ``inference_seconds``, ``reassembly_seconds``, ``crop_size``, ``weighting`` and
        what the caller adds (source and model file names).
    """

    numerator: np.ndarray
    denominator: np.ndarray
    region: np.ndarray
    start: int
    stop: int
    n_positions: int
    metadata: dict = field(default_factory=dict)


def parse_positions(text, n_positions):
    """Parse ``"START:STOP"`` (Python slice bounds, either may be empty or negative) into ``(start, stop)``.

    Examples
    --------
    >>> parse_positions("100:", 250), parse_positions(":-50", 250)
    ((100, 250), (0, 200))
    """
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        bounds = [int(part) if part.strip() else None for part in parts]
    except ValueError:
        raise ValueError(f"--positions {text!r} must be START:STOP (integers, e.g. 0:5000).") from None
    start, stop, _ = slice(*bounds).indices(n_positions)
    if stop <= start:
        raise ValueError(f"--positions {text!r} selects no positions of the {n_positions} in the scan.")
    return start, stop


def _chunk_groups(chunk_size, batch_size):
    """Groups per chunk: a whole number of prediction batches (the in-memory path's batches)."""
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer.")
    return max(1, int(chunk_size) // int(batch_size)) * int(batch_size)


def _canvas_shape(source):
    """`ptycholib.workflow.canvas_shape_for` of a source: the object's shape, or the scan's extent."""
    if source.obj is not None:
        return source.obj.shape
    half = source.patch_size // 2
    return (int(np.ceil(source.y_px.max())) + half + 2, int(np.ceil(source.x_px.max())) + half + 2)


def _scatter_chunk(numerator, denominator, patches, x_px, y_px, region_start, region_size, weights):
    """Add one chunk's reassembly sums into the canvases, computed on the chunk's own bounding box.

    A chunk of a raster scan covers a band of the object; scattering on that box instead of the
    whole canvas keeps ``np.bincount``'s output small. Positions move by whole pixels, which leaves
    their fractional parts, hence the bilinear weights, bit for bit the same.
    """
    reach = patches.shape[-1] // 2 + 2  # a tile spans floor(y) - N/2 .. floor(y) + N/2 + 1
    rows, cols = numerator.shape
    row0, row1 = max(0, int(np.floor(y_px.min())) - reach), min(rows, int(np.ceil(y_px.max())) + reach + 1)
    col0, col1 = max(0, int(np.floor(x_px.min())) - reach), min(cols, int(np.ceil(x_px.max())) + reach + 1)
    if row1 <= row0 or col1 <= col0:
        return  # the whole chunk lies off the canvas
    plan = reassemble._plan(patches.shape, x_px - col0, y_px - row0, (row1 - row0, col1 - col0),
                            region_start=region_start, region_size=region_size)
    part_numerator, part_denominator = reassemble._accumulate(
        reassemble._region_values(patches, region_start, region_size), plan, weights)
    numerator[row0:row1, col0:col1] += part_numerator
    denominator[row0:row1, col0:col1] += part_denominator


def reconstruct_partial(model, source, *, positions=None, backend=None, inference=None,
                        chunk_size=DEFAULT_CHUNK_SIZE, progress=False):
    """Predict the groups seeded by ``positions`` chunk by chunk and return their reassembly canvases.

    Parameters
    ----------
    model : TrainedModel, ModelArchive or path
    source : ptycholib.stream.PatternSource or ptycholib.data.PtychoData
        The scan (a `PtychoData` is read from memory).
    positions : tuple of int, optional
        ``(start, stop)``: predict the groups seeded by these positions (all groups by default).
        Every position seeds one group, so disjoint ranges that cover the scan split the work
        exactly (`merge_partials`).
    backend, inference, progress
        As in `ptycholib.workflow.reconstruct`.
    chunk_size : int
        Groups per chunk, rounded down to a multiple of the inference batch (at least one batch).

    Returns
    -------
    PartialCanvas
    """
    from ptycholib import workflow

    saved = workflow._as_archive(model)
    inference = inference or saved.config.inference
    if source.patch_size != saved.config.model.N:
        raise ValueError(f"the data's patterns are {source.patch_size} px but the model was trained for "
                         f"N={saved.config.model.N}.")
    n_positions = source.n_positions
    start, stop = (0, n_positions) if positions is None else (int(positions[0]), int(positions[1]))
    if not 0 <= start < stop <= n_positions:
        raise ValueError(f"positions=({start}, {stop}) must satisfy 0 <= start < stop <= {n_positions}.")
    chosen, net = workflow.build_backend_model(saved, backend or inference.backend)
    groups = workflow.inference_groups(source, saved.config.model, saved.config.training.neighbor_count)
    shape = _canvas_shape(source)
    region_start, region_size, weights = reassemble._region_and_weights(
        source.patch_size, crop_size=inference.crop_size, weighting=inference.weighting, probe=saved.probe)
    numerator = np.zeros(shape, dtype=np.complex128)
    denominator = np.zeros(shape)
    batch_size = workflow.inference_batch_size(saved.config.model, inference.batch_size)  # 0: automatic
    step = _chunk_groups(chunk_size, batch_size)
    firsts = range(start, stop, step)
    if progress:
        from tqdm.auto import tqdm

        firsts = tqdm(firsts, desc="reconstruct", unit="chunk")
    inference_seconds = reassembly_seconds = 0.0
    size = source.patch_size
    for first in firsts:
        last = min(first + step, stop)
        members = groups.indices[first:last]
        read = source.take(members.reshape(-1)) if hasattr(source, "take") else source.amplitudes[members.reshape(-1)]
        inputs = grouping.network_inputs(read.reshape(members.shape + (size, size)), saved.input_scale,
                                         saved.config.model.input_transform)
        begin = time.perf_counter()
        patches = chosen.training.predict_patches(net, inputs, np.asarray(groups.offsets[first:last], np.float32),
                                                  batch_size=batch_size, precision=inference.precision)
        inference_seconds += time.perf_counter() - begin
        begin = time.perf_counter()
        _scatter_chunk(numerator, denominator, patches, source.x_px[members], source.y_px[members],
                       region_start, region_size, weights)
        reassembly_seconds += time.perf_counter() - begin
    seeds = np.arange(start, stop)
    region = metrics.scanned_region_mask(source.x_px[seeds], source.y_px[seeds], shape, inference.crop_size)
    metadata = {"backend": chosen.name, "inference_seconds": inference_seconds,
                "reassembly_seconds": reassembly_seconds, "crop_size": inference.crop_size,
                "weighting": inference.weighting, "chunk_groups": step}
    return PartialCanvas(numerator, denominator, region, start, stop, n_positions, metadata)


def divide_canvases(numerator, denominator):
    """Return ``(obj, weights)``: numerator / denominator where covered (0 elsewhere), complex64 and float32.

    The last step of `ptycholib.reassemble.reassemble_patches`, with its output dtypes.
    """
    covered = denominator > 0
    obj = np.zeros(numerator.shape, dtype=np.complex128)
    np.divide(numerator, denominator, out=obj, where=covered)
    return obj.astype(np.complex64), denominator.astype(np.float32)


def _as_reconstruction(part, indices, seconds):
    from ptycholib import workflow

    obj, weights = divide_canvases(part.numerator, part.denominator)
    channels = indices.shape[1] if indices is not None else 1
    return workflow.Reconstruction(
        obj=obj, weights=weights, region=part.region, object_patches=np.zeros((0, channels, 0, 0), np.complex64),
        indices=indices if indices is not None else np.zeros((0, 1), np.int64),
        inference_seconds=part.metadata["inference_seconds"], reassembly_seconds=part.metadata["reassembly_seconds"],
        total_seconds=seconds, backend=part.metadata["backend"])


def reconstruct_chunked(model, source, *, backend=None, inference=None, chunk_size=DEFAULT_CHUNK_SIZE, progress=False):
    """Reconstruct a scan read chunk by chunk: `ptycholib.workflow.reconstruct` in bounded memory.

    Parameters are those of `reconstruct_partial` (all positions). What `workflow.reconstruct` does
    when handed a `ptycholib.stream.PatternSource`.

    Returns
    -------
    ptycholib.workflow.Reconstruction
        ``obj``, ``weights``, ``region`` and ``indices`` as in memory; ``object_patches`` is empty
        (shape ``(0, C, 0, 0)``): the patches of a large scan are not kept.
    """
    begin = time.perf_counter()
    part = reconstruct_partial(model, source, backend=backend, inference=inference, chunk_size=chunk_size,
                               progress=progress)
    from ptycholib import workflow

    saved = workflow._as_archive(model)
    groups = workflow.inference_groups(source, saved.config.model, saved.config.training.neighbor_count)
    return _as_reconstruction(part, groups.indices, time.perf_counter() - begin)


def save_partial(part, path, **metadata):
    """Write a `PartialCanvas` to an NPZ (``numerator``, ``denominator``, ``region``, JSON ``metadata``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": _PARTIAL_FORMAT, "start": part.start, "stop": part.stop, "n_positions": part.n_positions,
            **part.metadata, **metadata}
    with atomic_write(path, "wb") as handle:
        np.savez(handle, numerator=part.numerator, denominator=part.denominator, region=part.region,
                 metadata=np.array(json.dumps(info)))
    return path


def load_partial(path):
    """Read a `PartialCanvas` written by `save_partial` (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"partial reconstruction {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"numerator", "denominator", "region", "metadata"} - set(npz.files)
            if missing:
                raise ValueError(f"{path.name} lacks {', '.join(sorted(missing))}; it is not a partial reconstruction "
                                 "(write one with `ptycholib reconstruct --positions START:STOP`).")
            arrays = {key: npz[key] for key in ("numerator", "denominator", "region")}
            info = json.loads(str(npz["metadata"][()]))
    except (OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise ValueError(f"{path.name} is not a readable partial reconstruction ({error}).") from None
    if not isinstance(info, dict) or info.get("format") != _PARTIAL_FORMAT:
        raise ValueError(f"{path.name} is not a partial reconstruction (its metadata has no format "
                         f"{_PARTIAL_FORMAT!r}).")
    shape = arrays["numerator"].shape
    if arrays["numerator"].ndim != 2 or arrays["denominator"].shape != shape or arrays["region"].shape != shape:
        raise ValueError(f"{path.name}: numerator, denominator and region must be (rows, cols) of one shape.")
    bounds = {key: info.pop(key) for key in ("start", "stop", "n_positions")}
    info.pop("format")
    return PartialCanvas(arrays["numerator"].astype(np.complex128), arrays["denominator"].astype(np.float64),
                         arrays["region"].astype(bool), metadata=info, **bounds)


def merge_partials(parts):
    """Add the canvases of disjoint parts that cover a scan and divide: the whole reconstruction.

    Parameters
    ----------
    parts : list of PartialCanvas or paths
        In any order; they are summed in order of their first position.

    Returns
    -------
    ptycholib.workflow.Reconstruction
        ``obj`` and ``weights`` as one process computes them (the float64 canvas sums are regrouped,
        so they agree to rounding, and the complex64 object is in practice identical); ``region`` the
        union of the parts' regions; ``inference_seconds`` and ``reassembly_seconds`` summed over
        parts; no patches and no indices.

    Raises
    ------
    ValueError
        No parts, canvases of different shapes, parts of different scans or settings, or ranges that
        overlap or leave positions out.
    """
    parts = [part if isinstance(part, PartialCanvas) else load_partial(part) for part in parts]
    if not parts:
        raise ValueError("merge needs at least one partial reconstruction.")
    parts.sort(key=lambda part: part.start)
    first = parts[0]
    for part in parts[1:]:
        if part.numerator.shape != first.numerator.shape or part.n_positions != first.n_positions:
            raise ValueError(f"parts do not belong to one scan: canvases {first.numerator.shape} vs "
                             f"{part.numerator.shape}, {first.n_positions} vs {part.n_positions} positions.")
        for key in ("crop_size", "weighting", "source", "model"):
            if part.metadata.get(key) != first.metadata.get(key):
                raise ValueError(f"parts differ in {key}: {first.metadata.get(key)!r} vs {part.metadata.get(key)!r}; "
                                 "merge parts of one scan reconstructed with one model and one setting.")
    covered = 0
    for part in parts:
        if part.start != covered:
            problem = "overlap" if part.start < covered else "leave a gap"
            raise ValueError(f"the parts' position ranges {problem} at position {min(part.start, covered)} "
                             f"(ranges: {', '.join(f'{p.start}:{p.stop}' for p in parts)}); they must cover "
                             f"0:{first.n_positions} once.")
        covered = part.stop
    if covered != first.n_positions:
        raise ValueError(f"the parts cover positions 0:{covered} of 0:{first.n_positions}; reconstruct the rest too.")
    numerator = np.zeros_like(first.numerator)
    denominator = np.zeros_like(first.denominator)
    region = np.zeros(first.region.shape, dtype=bool)
    for part in parts:
        numerator += part.numerator
        denominator += part.denominator
        region |= part.region
    metadata = dict(first.metadata, inference_seconds=sum(p.metadata.get("inference_seconds", 0.0) for p in parts),
                    reassembly_seconds=sum(p.metadata.get("reassembly_seconds", 0.0) for p in parts))
    merged = PartialCanvas(numerator, denominator, region, 0, first.n_positions, first.n_positions, metadata)
    return _as_reconstruction(merged, None, 0.0)
