# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Simulating ptychography data
#
# ---
#
# ## Overview
# PtychoPINN had two simulators (TensorFlow's wrote amplitudes, PyTorch's wrote counts) and readers
# that disagreed on keys. ptycholib has **one** NumPy simulator and **one** data contract: an NPZ
# file with diffraction *amplitudes* (square roots of counts), scan positions in object pixels, the
# probe, and the true object when it is known. Both backends train on what this notebook writes.
#
# 1. Objects: random lines, a Gaussian random field, dead leaves
# 2. Probes: an ideal lens, a Gaussian, an out-of-focus zone plate
# 3. Scan patterns and their overlap
# 4. Diffraction patterns at a high and a low dose
# 5. The training and test sets, written for notebook 03
# 6. Groups of neighbouring positions (gridsize 2) and their offsets
#
# ## Prerequisites
# | Concepts | Importance | Notes |
# |---|---|---|
# | Far-field (Fraunhofer) diffraction | Necessary | the pattern is the squared modulus of a Fourier transform |
# | Ptychography | Necessary | overlapping illuminated regions make the phase problem solvable |
# | Poisson statistics | Helpful | photon counting noise, standard deviation = sqrt(counts) |
#
# *Time to learn*: 15 minutes.

# %% tags=["parameters"]
smoke: bool = False  # tiny sizes; runs in seconds (used by tests)
fig_dir: str = "../figures"  # where figures and the metrics file go
data_dir: str = "../build/data"  # where train.npz and test.npz for notebook 03 go
object_kind: str = "lines"  # object of the data sets: "lines", "grf" or "dead_leaves"
probe_kind: str = "fzp"  # probe of the data sets: "disk", "gaussian" or "fzp" (asymmetric: no twin image)
n_train: int = 2500  # training patterns (a 50 x 50 raster on a 260 px object)
n_test: int = 900  # test patterns, on a second object
n_objects: int = 1  # independent training objects, side by side on one mosaic (the test set is one held-out object)
patch_size: int = 64  # N, pixels per pattern side
step_px: float = 4.0  # scan step in object pixels; whole numbers keep positions on whole pixels
nphotons: float = 1e9  # mean counts per pattern (SPEC section 10)
low_nphotons: float = 1e4  # dose of the low-dose comparison
gridsize: int = 2  # groups of gridsize**2 neighbours (section 6)
neighbor_count: int = 7  # K: a group is drawn from a position's K nearest neighbours
seed: int = 0  # one seed for everything random

# %%
import time
from pathlib import Path

import numpy as np

from ptycholib import data, grouping, notebooks, plotting, simulate

if smoke:
    n_train, n_test = 64, 36
demo_shape = (96, 112) if smoke else (256, 256)
Path(fig_dir).mkdir(parents=True, exist_ok=True)
Path(data_dir).mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(seed)

# %% [markdown]
# ## 1. Objects
# `make_object` draws an amplitude texture and, independently, a phase texture of the same kind.
# *Lines* are PtychoPINN's: random lines blurred at 1, 5 and 10 px, so the object has both sharp
# and smooth features. A *Gaussian random field* has one correlation length; *dead leaves* are
# occluding discs with a wide range of sizes and hard edges, the hardest of the three to
# reconstruct. Amplitudes span 0.2 to 1 and phases -1 to 1 rad by default.

# %%
objects = {kind: simulate.make_object(kind, demo_shape, rng) for kind in simulate.OBJECT_KINDS}
fig = plotting.complex_images(list(objects.values()), list(objects), suptitle="Simulated objects")
notebooks.show(fig, "02_objects", fig_dir, dpi=100)

# %% [markdown]
# ## 2. Probes
# The probe lives on the object's pixel grid, centred at index N // 2. The *disk* probe is what an
# ideal lens focuses: the Fourier transform of a circular aperture (an Airy pattern). The *fzp*
# probe comes from an annular aperture (a zone plate with its central stop) used out of focus, the
# usual situation at a beamline: larger, with rings and a curved phase. Look at the phase of the fzp
# probe: it varies across the spot, which a reconstruction must get right too.

# %%
probes = {kind: simulate.make_probe(kind, patch_size) for kind in simulate.PROBE_KINDS}
diameters = {kind: simulate.probe_diameter_px(probe) for kind, probe in probes.items()}
print({kind: round(d, 1) for kind, d in diameters.items()})
fig = plotting.complex_images(
    list(probes.values()), [f"{k} (90% in {d:.0f} px)" for k, d in diameters.items()], phase_threshold=0.05
)
notebooks.show(fig, "02_probes", fig_dir, dpi=100)

# %% [markdown]
# ## 3. Scan patterns and overlap
# Neighbouring illuminated regions must overlap, so that every object pixel is seen in several
# patterns. The usual measure is the linear overlap `1 - step / diameter`; above about 60 % a
# reconstruction is well constrained. A raster on whole pixels is fair to baselines that round
# positions (PtyLab's ePIE); a Fermat spiral has uniform density without the raster's periodicity,
# which can otherwise imprint grid artefacts.

# %%
probe = probes[probe_kind]
diameter = diameters[probe_kind]
raster_shape = simulate.scan_canvas_shape(n_test, patch_size, step_px=step_px)
raster = simulate.raster_positions(raster_shape, patch_size, step_px=step_px, n_positions=n_test)
spiral_shape = simulate.scan_canvas_shape(n_test, patch_size, step_px=step_px, scan="spiral")
spiral = simulate.spiral_positions(spiral_shape, patch_size, n_test, step_px=step_px)
overlap = simulate.linear_overlap(step_px, diameter)
print(f"raster canvas {raster_shape}, spiral canvas {spiral_shape}, overlap {overlap:.2f}")
fig = plotting.scan_figure(
    [raster, spiral], ["raster", "Fermat spiral"], probe_diameter_px=diameter,
    suptitle=f"step {step_px:g} px, {probe_kind} probe of {diameter:.0f} px: linear overlap {overlap:.0%}",
)  # fmt: skip
notebooks.show(fig, "02_scans", fig_dir, dpi=100)

# %% [markdown]
# ## 4. Diffraction patterns at two doses
# A pattern is `|FFT(P * O_k)|**2 / N**2`, scaled so that the *mean* count per pattern is
# `nphotons`, then drawn from a Poisson distribution. At 1e9 photons the speckle extends to the
# edge of the detector; at the low dose only the central orders rise above the noise, and most
# pixels read 0 or 1. The colour scale is `log10(1 + counts)`.

# %%
obj = objects[object_kind]
x_demo, y_demo = simulate.raster_positions(obj.shape, patch_size, step_px=step_px)
picked = [0, len(x_demo) // 2]
high = simulate.simulate_counts(obj, probe, x_demo[picked], y_demo[picked], nphotons, rng)
low = simulate.simulate_counts(obj, probe, x_demo[picked], y_demo[picked], low_nphotons, rng)
print(f"mean counts per pattern: {high.sum((1, 2)).mean():.4g} (asked {nphotons:.0e}), "
      f"{low.sum((1, 2)).mean():.4g} (asked {low_nphotons:.0e}); zero pixels at low dose: {np.mean(low == 0):.0%}")  # fmt: skip
fig = plotting.diffraction_patterns(
    [high[0], high[1], low[0], low[1]],
    [f"{nphotons:.0e} photons, position {i}" for i in (1, 2)] + [f"{low_nphotons:.0e} photons, position {i}" for i in (1, 2)],
    ncols=2,
)  # fmt: skip
notebooks.show(fig, "02_patterns", fig_dir, dpi=100)

# %% [markdown]
# ## 5. The training and test sets
# `simulate_train_test` makes two objects of the same kind, one probe, and a raster scan on each;
# the test object is never seen in training. With `n_objects > 1` the training set scans that many
# independent objects instead, tiles of one mosaic canvas separated by vacuum; `train.object_index`
# says which tile each position belongs to, and groups never mix tiles. Every random choice comes
# from one seed, so the same parameters give bit-identical files. The test scan is also written at
# `low_nphotons` (`test_low.npz`, same object, probe and positions) for notebook 04's low-dose comparison. The next cell simulates a few thousand patterns: a second or
# two on a laptop.

# %%
start = time.perf_counter()
train, test = simulate.simulate_train_test(
    n_train=n_train, n_test=n_test, object_kind=object_kind, probe_kind=probe_kind, patch_size=patch_size,
    nphotons=nphotons, step_px=step_px, seed=seed, n_objects=n_objects,
)  # fmt: skip
seconds = time.perf_counter() - start
train_path = data.save_npz(train, f"{data_dir}/train.npz")
test_path = data.save_npz(test, f"{data_dir}/test.npz")
test_low = simulate.simulate_dataset(test.obj, test.probe, test.x_px, test.y_px, low_nphotons, seed + 1,
                                     metadata={"split": "test_low", "object_kind": object_kind, "probe_kind": probe_kind})
test_low_path = data.save_npz(test_low, f"{data_dir}/test_low.npz")
print(f"simulated {train.n_positions + test.n_positions} patterns in {seconds:.2f} s")
print(f"{train_path}: {train.n_positions} patterns, object {train.obj.shape}")
print(f"{test_path}: {test.n_positions} patterns, object {test.obj.shape}")
print(f"{test_low_path}: the same test scan at {low_nphotons:.0e} photons (notebook 04's low-dose comparison)")

# %% [markdown]
# The two scans over their objects' amplitudes: the same raster on two different objects. Reading the file
# back gives the same amplitudes bit for bit.

# %%
reloaded = data.load_npz(train_path)
assert np.array_equal(reloaded.amplitudes, train.amplitudes)
fig = plotting.scan_figure(
    [(train.x_px, train.y_px), (test.x_px, test.y_px)], ["train", "test"],
    backgrounds=[np.abs(train.obj), np.abs(test.obj)], probe_diameter_px=diameter,
)  # fmt: skip
notebooks.show(fig, "02_datasets", fig_dir, dpi=100)

# %% [markdown]
# ## 6. Groups and offsets
# With `gridsize = 2` the network sees four neighbouring patterns at once. A group is drawn from a
# position's `neighbor_count` nearest neighbours, and each member carries its offset from the group
# mean, which the physics layer uses to place the predicted patches on a shared canvas. The input
# scale `g` makes the mean energy of the network's input `(N / 2)**2`; it is computed once on the
# training set and stored with the model.

# %%
groups = grouping.group_neighbors(
    train.x_px, train.y_px, gridsize, neighbor_count=neighbor_count, seed=seed, object_index=train.object_index
)
chosen = groups.n_groups // 2
g = grouping.input_scale(train.amplitudes)
print(f"{groups.n_groups} groups of {groups.channels}; offsets of group {chosen} (px):\n{groups.offsets[chosen]}")
print(f"input scale g = {g:.4g}")
fig = plotting.group_figure(
    train.obj, train.x_px, train.y_px, groups.indices[chosen], groups.offsets[chosen], patch_size,
    title=f"group {chosen} of {groups.n_groups} (gridsize {gridsize}, K = {neighbor_count})",
)  # fmt: skip
notebooks.show(fig, "02_group", fig_dir, dpi=100)

# %%
metrics = {
    "n_train": train.n_positions, "n_test": test.n_positions, "n_objects": n_objects, "patch_size": patch_size,
    "nphotons": nphotons,
    "train_object_shape": list(train.obj.shape), "test_object_shape": list(test.obj.shape),
    "mean_counts_train": float((train.amplitudes.astype(np.float64) ** 2).sum((1, 2)).mean()),
    "probe_diameter_px": diameter, "linear_overlap": overlap, "input_scale": g, "n_groups": groups.n_groups,
    "simulation_seconds": seconds,
}  # fmt: skip
metrics_file = notebooks.save_metrics(metrics, fig_dir, "02_data_generation")
print(f"numbers written to {metrics_file}")

# %% [markdown]
# ## Summary
# - One simulator writes one data contract: amplitudes `sqrt(counts)`, positions in object pixels
#   (window centre at index N // 2), the probe and the true object.
# - The dose sets the mean count per pattern; Poisson noise is drawn exactly, so low-dose data look
#   like low-dose measurements.
# - Train and test sets come from different objects; groups of neighbours carry their offsets.
#
# ### What's next?
# Notebook 03 trains the physics-informed network on `train.npz` without looking at the object,
# and compares its reconstruction of `test.npz` with the truth.
#
# ### Try this
# - Set `object_kind="dead_leaves"` and `probe_kind="fzp"`: which features survive reconstruction?
# - Lower `nphotons` to 1e4 and compare the training curves in notebook 03.
# - Increase `step_px` until the overlap falls below 50 %, and watch the reconstruction degrade.
#
# ## Resources and references
# - O. Hoidn, A. A. Mishra, A. Mehta, "Physics constrained unsupervised deep learning for rapid,
#   high resolution scanning coherent diffraction reconstruction", *Sci. Rep.* 13, 22789 (2023).
# - O. Bunk et al., "Influence of the overlap parameter on the convergence of the ptychographical
#   iterative engine", *Ultramicroscopy* 108, 481 (2008).
# - X. Huang et al., "Optimization of overlap uniformness for ptychography", *Opt. Express* 22,
#   12634 (2014) (Fermat spiral scans).
