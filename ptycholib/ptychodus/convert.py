"""Conversions between what ptychodus passes a reconstructor and ptycholib's data (SPEC section 9).

`ptycho_data_from_input` turns a ptychodus ``ReconstructInput`` into a `ptycholib.data.PtychoData`;
`product_from_object` wraps a reconstructed object in a ptychodus ``Product``:

- counts ``(M, N, N)`` in any dtype -> amplitudes ``sqrt(counts)`` (float32). Negative counts
  (background-subtracted data) are clipped to 0 with a warning. Bad pixels are set to 0 in the
  amplitudes (the network input), and the mask travels in ``PtychoData.bad_pixels``, which
  training leaves out of the loss and of the intensity-scale fit;
- probe ``(C_opr, I, N, N)`` -> ``probe[0, 0]``, incoherent mode 0 of the first OPR mode (the
  dominant mode; ptychodus orders modes by power). Its power fraction goes into the metadata;
- positions in metres -> object pixels through the input object's geometry
  (``map_probe_positions_to_object_x_px`` / ``_y_px``), then ``+0.5`` for even N to move from
  ptychodus's window centre at index ``(N - 1) / 2`` to ours at ``N // 2`` (SPEC section 10,
  `ptycholib.ptychodus.files.ptychodus_px_to_object_px`);
- object layer 0 gives the canvas: the output object has the input's shape, pixel geometry and
  centre (one layer; unreconstructed pixels are 0). Probe, positions and metadata pass through.
"""

from __future__ import annotations

import logging

import numpy as np

from ptycholib import data as data_module
from ptycholib.ptychodus._upstream import Object, Product
from ptycholib.ptychodus.files import ptychodus_px_to_object_px

__all__ = ["product_from_object", "ptycho_data_from_input"]

logger = logging.getLogger(__name__)


def ptycho_data_from_input(reconstruct_input):
    """Convert what ptychodus passes a reconstructor into a `ptycholib.data.PtychoData`.

    Parameters
    ----------
    reconstruct_input : ptychodus.api.reconstruct.ReconstructInput
        Counts ``(M, N, N)`` in the file's dtype, bad-pixel mask ``(N, N)``, and a product with the
        probe ``(C_opr, I, N, N)``, the object ``(L, rows, cols)`` and positions in metres.

    Returns
    -------
    PtychoData
        Amplitudes ``sqrt(counts)`` with bad pixels set to 0, positions in our object pixels, probe
        ``[0, 0]`` and object layer 0 (which fixes the canvas); see the module docstring.

    Raises
    ------
    ValueError
        Non-square or unsupported pattern size, a probe that does not match the patterns, a
        near-field product, or any `PtychoData` validation failure.
    """
    product = reconstruct_input.product
    counts = np.asarray(reconstruct_input.diffraction_patterns)
    if counts.ndim != 3 or counts.shape[-1] != counts.shape[-2]:
        raise ValueError(
            f"ptychodus passed diffraction patterns of shape {counts.shape}; ptycholib needs square "
            f"(M, N, N) patterns with N in {data_module.SUPPORTED_PATTERN_SIZES}. Crop the patterns in "
            f"ptychodus (diffraction settings) around the DC pixel."
        )
    if not product.metadata.far_field:
        raise ValueError(
            f"product {product.metadata.name!r} declares near-field propagation; ptycholib models "
            f"far-field diffraction only."
        )
    n = counts.shape[-1]
    n_negative = int(np.count_nonzero(counts < 0)) if counts.dtype.kind in "if" else 0
    if n_negative:
        logger.warning("%d negative counts (background-subtracted data?) are clipped to 0.", n_negative)
        counts = np.clip(counts, 0, None)
    amplitudes = data_module.counts_to_amplitudes(counts, name="diffraction patterns", where="ptychodus input")
    bad_pixels = np.asarray(reconstruct_input.bad_pixels, dtype=bool)
    if bad_pixels.shape != (n, n):
        raise ValueError(f"ptychodus passed a bad-pixel mask of shape {bad_pixels.shape}; the patterns are {n} x {n}.")
    amplitudes[:, bad_pixels] = 0.0

    probe_modes = np.asarray(product.probes.get_array())
    probe_modes = probe_modes.reshape((-1,) + probe_modes.shape[-2:])
    if probe_modes.shape[-2:] != (n, n):
        raise ValueError(
            f"the probe is {probe_modes.shape[-2]} x {probe_modes.shape[-1]} px but the patterns are {n} x {n}; "
            f"ptycholib needs the probe on the object grid with the patterns' size (far field)."
        )
    power = np.sum(np.abs(probe_modes) ** 2, axis=(-2, -1))
    mode0_fraction = float(power[0] / power.sum()) if power.sum() > 0 else 1.0
    if probe_modes.shape[0] > 1:
        logger.info("ptycholib uses probe mode 0 of %d (%.1f%% of the power).", probe_modes.shape[0], 100 * mode0_fraction)

    obj = product.object_
    geometry = obj.get_geometry()
    probe_pixels = product.probes.get_pixel_geometry()
    if not np.allclose((probe_pixels.width_m, probe_pixels.height_m), (geometry.pixel_width_m, geometry.pixel_height_m), rtol=1e-6):
        logger.warning(
            "probe pixels (%g x %g m) differ from object pixels (%g x %g m); ptycholib assumes both on one grid.",
            probe_pixels.width_m, probe_pixels.height_m, geometry.pixel_width_m, geometry.pixel_height_m,
        )
    positions = product.probe_positions
    x_px, y_px = ptychodus_px_to_object_px(
        geometry.map_probe_positions_to_object_x_px(positions),
        geometry.map_probe_positions_to_object_y_px(positions),
        n,
    )
    metadata = {
        "source": "ptychodus",
        "product_name": product.metadata.name,
        "photon_energy_eV": float(product.metadata.photon_energy_eV),
        "detector_distance_m": float(product.metadata.detector_distance_m),
        "object_pixel_size_m": [float(geometry.pixel_width_m), float(geometry.pixel_height_m)],
        "object_center_m": [float(geometry.center_x_m), float(geometry.center_y_m)],
        "object_layers": int(obj.num_layers),
        "probe_modes": int(probe_modes.shape[0]),
        "probe_mode0_power_fraction": mode0_fraction,
        "n_bad_pixels": int(bad_pixels.sum()),
        "measurement": "amplitude",
        "converted_from": "intensity",
    }
    try:
        return data_module.PtychoData(
            amplitudes=amplitudes,
            x_px=x_px,
            y_px=y_px,
            probe=probe_modes[0],
            obj=obj.get_layer(0),
            scan_index=np.asarray(positions.get_indexes(), dtype=np.int64),
            bad_pixels=bad_pixels,
            metadata=metadata,
        )
    except ValueError as error:
        raise ValueError(f"ptychodus input: {error}") from None


def product_from_object(reconstruct_input, obj):
    """Wrap a reconstructed object in a ptychodus ``Product`` on the input object's grid.

    Parameters
    ----------
    reconstruct_input : ReconstructInput
    obj : ndarray of shape (rows, cols), complex
        Object on the input object's canvas (same shape).

    Returns
    -------
    ptychodus.api.product.Product
        One object layer with the input's pixel geometry and centre (dtype of the input object);
        metadata, positions and probes passed through; no losses.
    """
    source = reconstruct_input.product
    obj_in = source.object_
    obj = np.asarray(obj)
    if obj.shape != (obj_in.height_px, obj_in.width_px):
        raise ValueError(f"the object has shape {obj.shape} but the input object is {(obj_in.height_px, obj_in.width_px)}.")
    if obj_in.num_layers > 1:
        logger.info("ptycholib reconstructs one layer; the input object had %d.", obj_in.num_layers)
    dtype = obj_in.dtype if np.iscomplexobj(obj_in.get_array()) else np.complex64
    object_out = Object(
        array=obj[np.newaxis].astype(dtype),
        pixel_geometry=obj_in.get_pixel_geometry(),
        center=obj_in.get_center(),
        layer_spacing_m=[],
    )
    return Product(
        metadata=source.metadata,
        probe_positions=source.probe_positions,
        probes=source.probes,
        object_=object_out,
        losses=[],
    )
