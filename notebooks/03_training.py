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
# # 03 · Training without ground truth
#
# ---
#
# ## Overview
# PtychoPINN learns to invert diffraction patterns **without ever seeing the true object**: the network's
# object patches go through the physics (shared canvas → probe → far field) and are scored against the
# measured counts with a Poisson likelihood. This notebook trains that model on notebook 02's scan, with
# either backend.
#
# 1. The data and the configuration
# 2. The training schedule (stages, learning rates, physics weight)
# 3. Train without ground truth
# 4. The supervised baseline (for notebook 04's comparison)
# 5. Save the model archive, and a first look at the reconstruction
#
# ## Prerequisites
# | Concepts | Importance | Notes |
# |---|---|---|
# | Notebook 02 | Necessary | it writes the training and test scans |
# | Poisson likelihood | Helpful | the loss is `mean(â² − a² log â²)` in count units; the figure shows its deviance, ≈ 1 per pixel at the noise floor |
#
# *Time to learn*: 15 minutes; the training cell takes a few minutes on 2 CPU cores.

# %% tags=["parameters"]
backend: str = "torch"  # "torch" or "tensorflow"
smoke: bool = False  # tiny sizes; runs in seconds (used by tests)
fig_dir: str = "../figures"  # where figures and the metrics file go
data_dir: str = "../build/data"  # notebook 02's train.npz and test.npz
model_dir: str = "../build/models"  # archives are written to {model_dir}/{backend}/
preset: str = "../configs/cpu-quick.yaml"  # the recipe (configs/; "paper" is PtychoPINN's published one)
n_groups: int = 0  # training groups (0: the preset's)
nepochs: int = 0  # epochs (0: the preset's)
precision: str = ""  # "32" or "bf16-mixed" ("": the preset's float32; bf16 pays only on CPUs with AMX)
supervised_epochs: int = 3  # epochs of the supervised baseline (0 skips it)
seed: int = 0  # grouping, initial weights, batch order
logger: str = ""  # csv, mlflow or none ("": the preset's); mlflow gives one run per grid point

# %%
import time
from pathlib import Path

from ptycholib import archive, batching, config, data, notebooks, plotting, workflow

if smoke:
    n_groups, nepochs, supervised_epochs = 32, 2, 1
Path(fig_dir).mkdir(parents=True, exist_ok=True)
out_dir = Path(model_dir) / backend

# %% [markdown]
# ## 1. The data and the configuration
# The training scan holds diffraction **amplitudes** (√counts) and the scan positions; the network never
# sees `objectGuess`. One config drives both backends (notebook 01); the recipe comes from a named preset
# in `configs/` (`cpu-quick`: the best quality per CPU-minute that the convergence study in
# docs/results.md measured). Its key choice is `object_big=False`, PtychoPINN's meaning: the network
# predicts **one object per group of four patterns**, and each pattern must be explained by that one
# object seen at its own position — the strongest form of the overlap constraint.

# %%
train_data = data.load_npz(Path(data_dir) / "train.npz")
test_data = data.load_npz(Path(data_dir) / "test.npz")
cfg = config.load_config(preset)
chosen = {"n_groups": n_groups, "nepochs": nepochs, "precision": precision, "logger": logger}
cfg = config.apply_overrides(cfg, {"backend": backend, "seed": seed, **{k: v for k, v in chosen.items() if v}})
if smoke:
    cfg = config.apply_overrides(cfg, {"batch_size": 8})
print(f"{train_data.n_positions} training positions, N={train_data.patch_size}; backend {backend}; preset {Path(preset).stem}: "
      f"gridsize {cfg.model.gridsize}, object_big={cfg.model.object_big}, {cfg.training.n_groups} groups x "
      f"{cfg.training.nepochs} epochs, lr schedule {cfg.training.lr_schedule}")

# %% [markdown]
# ## 2. The schedule
# The learning rate follows PtychoPINN's plateau schedule (halve after two epochs without a better
# validation loss, floor 1e-4), computed by one arithmetic (`ptycholib.schedules`) that both backends
# follow; the plot shows the starting plan — a plateau lowers it during training, and the history
# records the rate each epoch really used. The physics weight stays 1 (pure Poisson likelihood).

# %%
plan = batching.epoch_plan(cfg.training)
notebooks.show(plotting.schedule(plan), f"03_schedule_{backend}", fig_dir)

# %% [markdown]
# ## 3. Train without ground truth
# **This is the slow cell** (about five minutes on 2 cores in float32). The history keeps the optimised
# objective (`loss`, the Poisson NLL in count units: it carries a data-dependent constant, so only its
# changes mean something) and, beside it, the **Poisson deviance per pixel** (`deviance`, `val_deviance`):
# 2·Σ[a²·log(a²/â²) − (a² − â²)]/n, zero for a perfect fit and about 1 when the model explains the counts
# down to their photon noise (a little under 1 when most pixels see few photons). The figure below shows
# train and validation deviance (5 % of the groups, held out) on a log axis with that floor dotted: expect a
# steep drop in the first epochs, then a slow approach toward the floor. Validation close to train means no
# overfitting; a curve far above 1 that stops falling means the network stopped learning (check `g`).
# Training keeps the weights of the epoch with the best validation loss. **Measured in the main job**
# (2026-12-02, torch, 14 epochs): the deviance fell from 4.65e4 to 1.07e4 per pixel (validation 1.02e4) and
# was still falling slowly — four decades above the noise floor. At 1e9 photons a pixel holds thousands of
# counts, so even a small relative misfit is many standard deviations: this is the blur notebook 04 scores
# (amplitude SSIM 0.52), not a converged fit.

# %%
trained = workflow.train_model(train_data, cfg, log_dir=out_dir / "logs", progress=False)
print(f"{trained.n_groups} groups x {len(trained.history)} epochs in {trained.seconds:.1f} s "
      f"({trained.n_groups * len(trained.history) / trained.seconds:.1f} groups/s); deviance per pixel "
      f"{trained.history[0]['deviance']:.3g} -> {trained.history[-1]['deviance']:.3g} "
      f"(validation {trained.history[-1]['val_deviance']:.3g}; 1 = noise floor)")

# %%
notebooks.show(plotting.loss_curves({f"PINN ({backend})": trained.history}), f"03_loss_{backend}", fig_dir)

# %% [markdown]
# ## 4. The supervised baseline
# For comparison, the same network trained PtychoNN-style: MAE against the **true** object patches (which
# an experiment does not have). Notebook 04 puts it beside the physics-informed model.

# %%
if supervised_epochs:
    supervised_cfg = config.apply_overrides(cfg, {"model_type": "supervised", "nepochs": supervised_epochs,
                                                  "stages": [], "lr_schedule": "constant"})
    supervised = workflow.train_model(train_data, supervised_cfg, log_dir=out_dir / "supervised_logs", progress=False)
    archive.save_model(out_dir / "supervised" / archive.DEFAULT_NAME, supervised.archive)

# %% [markdown]
# ## 5. Save, and a first look
# The archive (`wts.h5.zip`) holds the config, backend-neutral weights, the probe and the scales `g` and
# `s` — no pickle — and loads in either backend. Reconstructing the **test** object (never seen in
# training) gives a first score; notebook 04 does this properly.

# %%
path = archive.save_model(out_dir / archive.DEFAULT_NAME, trained.archive)
start = time.perf_counter()
recon = workflow.reconstruct(path, test_data)
scores = workflow.evaluate(recon, test_data)
print(f"saved {path}; test amplitude SSIM {scores['amplitude_ssim']:.3f}, phase RMSE {scores['phase_rmse']:.3f} rad")
fig = plotting.compare_objects(test_data.obj, {f"PINN ({backend})": recon.obj}, mask=recon.region)
notebooks.show(fig, f"03_first_look_{backend}", fig_dir)

# %%
metrics_file = notebooks.save_metrics({
    "backend": backend, "train_seconds": trained.seconds, "n_groups": trained.n_groups,
    "epochs": len(trained.history), "groups_per_second": trained.n_groups * len(trained.history) / trained.seconds,
    "final_loss": trained.history[-1]["loss"], "final_val_loss": trained.history[-1]["val_loss"],
    "final_deviance": trained.history[-1]["deviance"], "final_val_deviance": trained.history[-1]["val_deviance"],
    "test_amplitude_ssim": scores["amplitude_ssim"], "test_phase_rmse": scores["phase_rmse"],
}, fig_dir, f"03_training_{backend}")
print(f"numbers written to {metrics_file}")

# %% [markdown]
# ## Summary
# - The model trained on diffraction data alone; the loss is the Poisson likelihood of the measured counts,
#   and its deviance per pixel says how far the fit is from the photon-noise floor (1): about 1e4 after the
#   main job's five minutes, far from converged.
# - The archive in `{model_dir}/{backend}/wts.h5.zip` is what notebook 04, `ptycholib reconstruct` and
#   ptychodus load — from either backend.
#
# ### What's next?
# Notebook 04 reconstructs the test scan, scores it against the truth, and compares it with the supervised
# baseline and an iterative ePIE solver.
#
# ### Try this
# - Load `preset="../configs/paper.yaml"` (PtychoPINN's published recipe, n_filters_scale 2, 60 epochs):
#   on 2 CPU cores that is hours; on a GPU, minutes.
# - Override `object_big=True` in the config (C patches merged on a group canvas instead of one object):
#   the convergence study measured it slightly behind at equal CPU time.
# - Add a physics-weight ramp (MAE first, Poisson later): `physics_weight_schedule="cosine"`, `physics_weight_start=0`.
# - Train with `backend = "tensorflow"` and load the archive with the torch backend in notebook 04.
