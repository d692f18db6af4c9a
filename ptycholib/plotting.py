"""Figure helpers for the notebooks: arrays in, ``matplotlib.figure.Figure`` out.

Figures are built with the object-oriented API (``Figure`` without pyplot), so they work headless
and never touch global pyplot state: no window pops up and no backend shows them a second time. In a
notebook, end the cell with `ptycholib.notebooks.show` (saves the PNG under ``fig_dir`` and returns the
figure, which IPython then shows as the cell's value); elsewhere call ``fig.savefig(path)``. Tables are
not drawn here: `ptycholib.notebooks.show_table` shows them as real tables.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

__all__ = [
    "image_grid",
    "complex_images",
    "scan_figure",
    "diffraction_patterns",
    "group_figure",
    "schedule",
    "loss_curves",
    "compare_objects",
    "error_maps",
    "frc_curves",
    "quality_versus_time",
    "difference_maps",
    "parity_ratios",
]


def _axes(width=6.5, height=4.0):
    """One Figure (constrained layout) with one Axes: the frame of every line plot here."""
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def image_grid(images, titles=None, *, cmap="viridis", ncols=None, suptitle=None, colorbar=True, panel_size=3.0):
    """Show real images on a grid, each with its own colour bar.

    Parameters
    ----------
    images : sequence of ndarray of shape (rows, cols)
    titles : sequence of str, optional
    cmap : str or sequence of str
        One colour map, or one per image.
    ncols : int, optional
        Panels per row (default: all in one row).
    suptitle : str, optional
    colorbar : bool
    panel_size : float
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    images = [np.asarray(image) for image in images]
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    cmaps = [cmap] * len(images) if isinstance(cmap, str) else list(cmap)
    fig = Figure(figsize=(panel_size * ncols + 0.6, panel_size * nrows + (0.5 if suptitle else 0.2)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, image, index in zip(axes, images, range(len(images))):
        shown = ax.imshow(image, cmap=cmaps[index], interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[index], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if colorbar:
            fig.colorbar(shown, ax=ax, shrink=0.8)
    for ax in axes[len(images) :]:
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def complex_images(images, titles, *, suptitle=None, phase_threshold=0.0):
    """Show complex images as amplitude (top row) and phase (bottom row).

    Parameters
    ----------
    images : sequence of ndarray of shape (rows, cols), complex
    titles : sequence of str
    suptitle : str, optional
    phase_threshold : float
        Blank the phase where the amplitude is below this fraction of its maximum (useful for
        probes, whose phase is noise where there is no light).

    Returns
    -------
    matplotlib.figure.Figure
    """
    amplitudes = [np.abs(image) for image in images]
    phases = []
    for image, amplitude in zip(images, amplitudes):
        phase = np.angle(image)
        phases.append(np.where(amplitude >= phase_threshold * amplitude.max(), phase, np.nan))
    return image_grid(
        amplitudes + phases,
        [f"{title}: amplitude" for title in titles] + [f"{title}: phase (rad)" for title in titles],
        cmap=["gray"] * len(images) + ["twilight"] * len(images),
        ncols=len(images),
        suptitle=suptitle,
    )


def scan_figure(scans, titles, *, backgrounds=None, probe_diameter_px=None, suptitle=None):
    """Show scan positions, each over an optional background image, with one probe footprint drawn.

    Parameters
    ----------
    scans : sequence of (x_px, y_px)
        Positions in object pixels (x along columns, y along rows).
    titles : sequence of str
    backgrounds : sequence of ndarray of shape (rows, cols) or None, optional
        Images under the positions (e.g. ``np.abs(obj)``).
    probe_diameter_px : float, optional
        Draw a circle of this diameter around the first position.
    suptitle : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    backgrounds = backgrounds or [None] * len(scans)
    fig = Figure(figsize=(4.2 * len(scans), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(scans), squeeze=False)).ravel()
    for ax, (x_px, y_px), title, background in zip(axes, scans, titles, backgrounds):
        if background is not None:
            ax.imshow(background, cmap="gray", interpolation="nearest")
        ax.plot(x_px, y_px, ".", markersize=2, color="tab:orange")
        if probe_diameter_px:
            ax.add_patch(Circle((x_px[0], y_px[0]), probe_diameter_px / 2, fill=False, color="tab:cyan", lw=1.5))
        ax.set_title(f"{title} ({len(x_px)} positions)", fontsize=9)
        ax.set_aspect("equal")
        if background is None:
            ax.invert_yaxis()
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def diffraction_patterns(patterns, titles, *, ncols=None, suptitle=None):
    """Show diffraction patterns (counts or amplitudes squared) on a log scale, ``log10(1 + counts)``.

    Parameters
    ----------
    patterns : sequence of ndarray of shape (N, N)
        Counts, DC at the centre.
    titles : sequence of str

    Returns
    -------
    matplotlib.figure.Figure
    """
    return image_grid(
        [np.log10(1.0 + np.asarray(pattern, dtype=np.float64)) for pattern in patterns],
        [f"{title}\nlog10(1 + counts)" for title in titles],
        cmap="magma",
        ncols=ncols,
        suptitle=suptitle,
    )


def group_figure(obj, x_px, y_px, indices, offsets, patch_size, *, title=None):
    """Draw one group on the object: its members' N x N windows, centre and offsets.

    Parameters
    ----------
    obj : ndarray of shape (rows, cols)
        Object (its modulus is shown).
    x_px, y_px : ndarray of shape (n_positions,)
        All scan positions (shown faintly).
    indices : ndarray of shape (C,), int
        The group's members.
    offsets : ndarray of shape (C, 2)
        Member position minus group mean, last axis ``(x, y)``.
    patch_size : int
        N.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Left: the windows on the object; right: the offsets (px) as arrows from the group centre.
    """
    x_px, y_px = np.asarray(x_px), np.asarray(y_px)
    indices, offsets = np.asarray(indices), np.asarray(offsets)
    fig = Figure(figsize=(9.5, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.imshow(np.abs(obj), cmap="gray", interpolation="nearest")
    left.plot(x_px, y_px, ".", markersize=1, color="tab:orange", alpha=0.4)
    colours = [f"C{i % 10}" for i in range(len(indices))]
    half = patch_size // 2
    for member, colour in zip(indices, colours):
        left.add_patch(Rectangle((x_px[member] - half - 0.5, y_px[member] - half - 0.5), patch_size, patch_size,
                                 fill=False, color=colour, lw=1.2))  # fmt: skip
        left.plot(x_px[member], y_px[member], "o", color=colour, markersize=4)
    centre = (x_px[indices].mean(), y_px[indices].mean())
    left.plot(*centre, "w+", markersize=10)
    left.set_title(f"{len(indices)} windows of {patch_size} px on the object", fontsize=9)
    for (dx, dy), colour, member in zip(offsets, colours, indices):
        right.annotate("", xy=(dx, dy), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.5})
        right.plot(dx, dy, "o", color=colour)
        right.annotate(f" {member}", (dx, dy), fontsize=8)
    reach = max(1.0, float(np.abs(offsets).max()) * 1.4)
    right.set_xlim(-reach, reach)
    right.set_ylim(reach, -reach)
    right.set_aspect("equal")
    right.axhline(0, color="0.8", lw=0.8)
    right.axvline(0, color="0.8", lw=0.8)
    right.set_xlabel("offset x (px)")
    right.set_ylabel("offset y (px)")
    right.set_title("offsets = position - group mean", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def schedule(plan):
    """Show a multi-stage training schedule: learning rate and physics weight per epoch.

    Parameters
    ----------
    plan : sequence of batching.EpochPlan
        ``batching.epoch_plan(training)``; each entry has ``epoch``, ``stage``, ``learning_rate`` and
        ``physics_weight``.

    Returns
    -------
    matplotlib.figure.Figure
        Stage boundaries are dotted vertical lines.
    """
    epochs = np.array([p.epoch for p in plan])
    fig = Figure(figsize=(7.5, 3.2), layout="constrained")
    rate_ax, weight_ax = fig.subplots(1, 2)
    rate_ax.step(epochs, [p.learning_rate for p in plan], where="post")
    rate_ax.set_yscale("log")
    rate_ax.set_ylabel("learning rate")
    weight_ax.step(epochs, [p.physics_weight for p in plan], where="post", color="tab:red")
    weight_ax.set_ylim(-0.05, 1.05)
    weight_ax.set_ylabel("physics weight (1 = Poisson NLL only)")
    stages = np.array([p.stage for p in plan])
    for ax in (rate_ax, weight_ax):
        for boundary in epochs[1:][np.diff(stages) != 0]:
            ax.axvline(boundary, color="0.6", ls=":")
        ax.set_xlabel("epoch")
    fig.suptitle(f"{len(plan)} epochs in {len(set(stages.tolist()))} stage(s)")
    return fig


def loss_curves(histories, *, metric=None, log=True):
    """Plot training (solid) and validation (dashed) curves per epoch for one or more runs.

    By default the curves are the **Poisson deviance per pixel** (``deviance`` / ``val_deviance``,
    `ptycholib.metrics.poisson_deviance`) when every run's history has it: 0 for a perfect fit and
    about 1 when the model explains the data down to the photon noise (dotted line), comparable
    between train and validation and across data sets, on a log axis. Otherwise (the supervised
    baseline, or records without it) the raw objective ``loss`` / ``val_loss``.

    Parameters
    ----------
    histories : dict of str to list of dict
        Run label to its per-epoch records (`ptycholib.workflow.TrainedModel.history`), each with
        ``epoch`` and the metric, optionally with its ``val_`` twin (None or NaN when there is no
        validation split).
    metric : {"deviance", "loss", "amplitude_mae"}, optional
        Record key to plot; default ``"deviance"`` when every history has finite values of it, else
        ``"loss"``.
    log : bool
        Logarithmic axis (only when every plotted value is positive).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if metric is None:
        metric = "deviance" if histories and all(_has_finite(history, "deviance") for history in histories.values()) \
            else "loss"
    if histories and not any(metric in record for history in histories.values() for record in history):
        raise ValueError(f"no record has {metric!r}; plot 'deviance', 'loss' or 'amplitude_mae'.")
    fig, ax = _axes()
    positive = True
    for index, (label, history) in enumerate(histories.items()):
        colour = f"C{index % 10}"
        epochs = [record["epoch"] for record in history]
        values = _column(history, metric)
        ax.plot(epochs, values, "-", color=colour, label=f"{label}: train")
        positive &= bool(np.all(values[np.isfinite(values)] > 0))
        val = _column(history, f"val_{metric}")
        if np.any(np.isfinite(val)):
            ax.plot(epochs, val, "--", color=colour, label=f"{label}: validation")
            positive &= bool(np.all(val[np.isfinite(val)] > 0))
    if metric == "deviance":
        ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1, label="noise floor (about 1)")
    if log and positive:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel({"deviance": "Poisson deviance per pixel", "amplitude_mae": "amplitude MAE (sqrt counts)"}.get(
        metric, metric))
    ax.legend(fontsize=8)
    return fig


def _column(history, key):
    """``key`` of every record as floats, NaN where missing or None."""
    return np.array([np.nan if record.get(key) is None else record[key] for record in history], dtype=float)


def _has_finite(history, key):
    return bool(history) and bool(np.any(np.isfinite(_column(history, key))))


def compare_objects(truth, recons, *, mask=None, align=True):
    """Show the true object beside reconstructions: amplitude (top row) and phase (bottom row).

    Parameters
    ----------
    truth : ndarray of shape (rows, cols), complex
    recons : dict of str to ndarray of shape (rows, cols), complex
        Label to reconstruction on the truth's pixel grid.
    mask : ndarray of shape (rows, cols), bool, optional
        Region to show (e.g. where the reconstruction has weight); outside it is blank.
    align : bool
        Multiply each reconstruction by the complex factor that best matches it to the truth inside
        the mask (`metrics.remove_global_factor`), so that phase offset and scale do not hide the
        comparison.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ptycholib import metrics

    truth = np.asarray(truth)
    shown = np.ones(truth.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    images = {"truth": truth}
    for label, recon in recons.items():
        images[label] = metrics.remove_global_factor(recon, truth, shown) if align else np.asarray(recon)
    blanked = [np.where(shown, image, np.nan) for image in images.values()]
    return image_grid(
        [np.abs(image) for image in blanked] + [np.angle(image) for image in blanked],
        [f"{label}: amplitude" for label in images] + [f"{label}: phase (rad)" for label in images],
        cmap=["gray"] * len(images) + ["twilight"] * len(images),
        ncols=len(images),
    )


def error_maps(truth, recons, *, mask=None):
    """Show where each reconstruction differs from the truth: amplitude and wrapped phase errors.

    Each reconstruction is first aligned to the truth (`metrics.align_to_truth`: sub-pixel
    registration and one global complex factor) over ``mask``'s bounding box.

    Parameters
    ----------
    truth : ndarray of shape (rows, cols), complex
    recons : dict of str to ndarray of shape (rows, cols), complex
    mask : ndarray of shape (rows, cols), bool, optional
        Scored region.

    Returns
    -------
    matplotlib.figure.Figure
        Top row ``|recon| - |truth|``, bottom row the wrapped phase difference (rad).
    """
    from ptycholib import metrics

    amplitude_errors, phase_errors = [], []
    for recon in recons.values():
        aligned = metrics.align_to_truth(recon, truth, mask=mask)
        recon_amplitude, truth_amplitude = aligned.amplitudes()
        recon_phase, truth_phase = aligned.phases()
        amplitude_errors.append(np.where(aligned.mask, recon_amplitude - truth_amplitude, np.nan))
        phase_errors.append(np.where(aligned.mask, recon_phase - truth_phase, np.nan))
    labels = list(recons)
    return image_grid(
        amplitude_errors + phase_errors,
        [f"{label}: amplitude error" for label in labels] + [f"{label}: phase error (rad)" for label in labels],
        cmap="RdBu_r",
        ncols=len(labels),
    )


def frc_curves(results, *, title="Fourier ring correlation with the truth"):
    """Plot FRC curves with the 0.5 and 1/2-bit thresholds.

    Parameters
    ----------
    results : dict of str to metrics.FRCResult
        Label to FRC result (``frequencies`` as a fraction of Nyquist, ``curve``, ``half_bit``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _axes()
    half_bit = None
    for index, (label, result) in enumerate(results.items()):
        ax.plot(result.frequencies, result.curve, color=f"C{index % 10}", label=label)
        half_bit = result
    ax.axhline(0.5, color="0.4", ls="--", lw=1, label="0.5")
    if half_bit is not None:
        ax.plot(half_bit.frequencies, half_bit.half_bit, color="0.4", ls=":", lw=1, label="1/2-bit")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlabel("spatial frequency (fraction of Nyquist)")
    ax.set_ylabel("FRC")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def quality_versus_time(rows, *, key="amplitude_ssim", title=None, target=None):
    """Plot one line per method of ``rows`` (`ptycholib.refine.compare_starts`): a score against seconds.

    Parameters
    ----------
    rows : list of dict
        With ``method``, ``seconds``, ``iterations`` and ``key``.
    key : str
        The score on the y axis.
    title : str, optional
    target : float, optional
        Draw a horizontal line at this score (e.g. ePIE-30's).
    """
    fig, ax = _axes(height=4.2)
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = [row for row in rows if row["method"] == method]
        (line,) = ax.plot([r["seconds"] for r in mine], [r[key] for r in mine], marker="o", label=method)
        for r in mine[-1:]:
            ax.annotate(str(r["iterations"]), (r["seconds"], r[key]), textcoords="offset points", xytext=(4, -10),
                        fontsize=8, color=line.get_color())
    if target is not None:
        ax.axhline(target, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("seconds (start included)")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title or f"{key.replace('_', ' ')} versus time")
    ax.legend()
    return fig


def difference_maps(images, titles, *, suptitle=None):
    """Show signed differences (e.g. torch minus tensorflow) on a symmetric colour scale."""
    return image_grid([np.asarray(image) for image in images], titles, cmap="RdBu_r", suptitle=suptitle)


def _value(row, name):
    return row[name] if isinstance(row, dict) else getattr(row, name)


def parity_ratios(rows, *, title="Backend parity: measured ÷ target (pass at or below 1)"):
    """Plot measured ÷ target for every parity row, one column of points per stage, on a log axis.

    A row passes when its measured value is at or below its target (`ptycholib.parity.ParityRow`), so
    every point at or below the pass line at 1 passes; how far below it shows the margin. Rows measured
    exactly 0 (an exact target or an exact result) sit on a floor at the bottom, marked "exact";
    a non-zero value against a target of 0, or a non-finite one, sits at the top and fails.

    Parameters
    ----------
    rows : sequence of ParityRow or dict
        Each with ``stage``, ``measured`` and ``target`` (``as_dict()`` rows from a metrics file work).
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        Passing points green (circles), failing red (crosses). Used in notebook 05.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("parity_ratios needs at least one row.")
    stages = list(dict.fromkeys(str(_value(r, "stage")) for r in rows))
    measured = np.array([float(_value(r, "measured")) for r in rows])
    target = np.array([float(_value(r, "target")) for r in rows])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(target > 0, measured / np.where(target > 0, target, 1.0), np.inf)
    exact = np.isfinite(measured) & (measured == 0)
    ratio[exact] = 0.0
    failed = ~(np.isfinite(measured) & (measured <= target))
    shown = ratio[(ratio > 0) & np.isfinite(ratio)]
    floor = min(shown.min() if shown.size else 1.0, 1e-2) / 10
    ceiling = max(shown.max() if shown.size else 1.0, 10.0) * 10
    y = np.clip(np.nan_to_num(ratio, nan=np.inf), floor, ceiling)
    column = np.array([stages.index(str(_value(r, "stage"))) for r in rows], dtype=float)
    for k in range(len(stages)):  # spread the points of one stage a little so that they stay visible
        members = np.flatnonzero(column == k)
        column[members] += np.linspace(-0.25, 0.25, len(members)) if len(members) > 1 else 0.0
    fig, ax = _axes(width=max(6.5, 1.1 * len(stages) + 2), height=4.2)
    ok = ~failed
    ax.scatter(column[ok], y[ok], color="tab:green", marker="o", s=22, label="pass", zorder=3)
    if failed.any():
        ax.scatter(column[failed], y[failed], color="tab:red", marker="x", s=40, label="FAIL", zorder=3)
    ax.axhline(1.0, color="0.3", lw=1.0, ls="--", label="target (pass line)")
    if exact.any():
        ax.axhline(floor, color="0.7", lw=0.6, ls=":")
        ax.text(0.01, floor * 1.3, "exact (0)", transform=ax.get_yaxis_transform(), fontsize=8, color="0.4")
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, ceiling * 2)
    ax.set_xticks(range(len(stages)), stages, rotation=20, ha="right")
    ax.set_ylabel("measured ÷ target")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return fig
