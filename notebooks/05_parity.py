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
# # 05 · How closely do the two backends agree?
#
# ---
#
# ## Overview
# ptycholib has one mathematics and two implementations. "They should agree" is a hope; this notebook
# **measures** the agreement at every stage, against the targets of SPEC §8, with the same inputs fed to
# both backends:
#
# 1. configuration export and the simulator (one implementation each: exact);
# 2. the physics forward model of each backend against the NumPy reference;
# 3. the network with shared canonical weights, and one training step's gradients;
# 4. reassembly;
# 5. both backends trained on the same data from the same initial weights with the same batch order,
#    and their reconstructions scored.
#
# ## Prerequisites
# | Concepts | Importance | Notes |
# |---|---|---|
# | Notebooks 02–04 | Helpful | data, training, scores |
# | float32 round-off | Helpful | ~1e-7 relative per operation; it accumulates through a deep network |
#
# *Time to learn*: 10 minutes; the training cell trains both backends (a few minutes).

# %% tags=["parameters"]
smoke: bool = False  # tiny sizes; runs in seconds (used by tests)
fig_dir: str = "../figures"  # where figures and the metrics file go
data_dir: str = "../build/data"  # notebook 02's train.npz and test.npz
gridsize: int = 2  # groups of gridsize**2 patterns
n_filters_scale: int = 1  # network width
n_groups: int = 1024  # training groups for the trained-model comparison
nepochs: int = 8  # epochs for the trained-model comparison
object_big: bool = False  # False: one object per group (PtychoPINN's gridsize-2 setting, notebook 03's preset)
lr_schedule: str = "cosine"  # learning-rate schedule both backends must follow step for step
seed: int = 0  # initial weights, batch order, inputs

# %%
from pathlib import Path

from ptycholib import config, data, notebooks, parity, plotting

if smoke:
    n_groups, nepochs = 24, 1
Path(fig_dir).mkdir(parents=True, exist_ok=True)
rows = []  # one ParityRow per measured stage

# %% [markdown]
# ## 1. Configuration and data: one implementation, exact
# A config exported to PtychoPINN's legacy dict and read back is the same object; the simulator run twice
# with one seed gives bit-identical patterns. Both backends read these same NumPy arrays.

# %%
rows += parity.config_and_simulator_rows(seed=seed)

# %% [markdown]
# ## 2. Forward model against the NumPy reference
# Identical object patches, offsets and probe go through each backend's shared canvas, illumination and
# far-field steps. Expect differences around 1e-7: float32 round-off, far below the 1e-5 target.

# %%
model_configs = parity.standard_model_configs(smoke=smoke)
rows += parity.forward_model_rows(model_configs, seed=seed)

# %% [markdown]
# ## 3. Network and gradients with shared weights
# The torch model's initial weights are copied into TensorFlow through the canonical (backend-neutral)
# layout; the outputs must agree to 1e-4 relative and one training step's gradients to 1e-3.

# %%
rows += parity.network_rows(model_configs, seed=seed)
rows += parity.gradient_rows(model_configs, seed=seed)
rows += parity.reassembly_rows(seed=seed)

# %% [markdown]
# ## 4. Both backends trained from the same start
# Same data, same initial weights, same batch order (drawn in NumPy), same schedule. Float32 round-off
# makes the weights drift apart slowly during training, so the comparison is on what matters — the
# reconstructions: PSNR within 1 dB and SSIM within 0.02 (SPEC §8). *This is the slow cell.*

# %%
train_data = data.load_npz(Path(data_dir) / "train.npz")
test_data = data.load_npz(Path(data_dir) / "test.npz")
cfg = config.apply_overrides(config.Config(), {"gridsize": gridsize, "n_filters_scale": n_filters_scale,
                                               "n_groups": n_groups, "nepochs": nepochs, "seed": seed,
                                               "object_big": object_big, "lr_schedule": lr_schedule})
trained = parity.compare_training(train_data, test_data, cfg)
rows += trained.rows
notebooks.show(plotting.loss_curves(trained.histories), "05_loss_overlay", fig_dir)

# %% [markdown]
# The two reconstructions of the test object subtracted (torch minus TensorFlow). Expect amplitude
# differences of a few hundredths (the object's amplitude spans 0.2 to 1) and phase differences of about
# 0.1 rad at most, with a faint grid that follows the scan raster.

# %%
notebooks.show(plotting.difference_maps(*trained.difference_maps(test_data)), "05_difference_maps", fig_dir)

# %% [markdown]
# ## 5. The parity result
# Every measured row as measured ÷ target, one column per stage, on a log axis: a point at or below the
# dashed line at 1 passes, and its distance below the line is the margin. Rows that agree exactly (measured
# 0) sit on the dotted floor.

# %%
print(f"{sum(r.passed for r in rows)}/{len(rows)} rows pass")
notebooks.show(plotting.parity_ratios(rows), "05_parity_ratios", fig_dir)

# %% [markdown]
# The same rows as a table: what was measured, the SPEC §8 target, and whether it passed.

# %%
table = [(r.stage, r.detail, f"{r.measured:.2e}", f"{r.target:g}", "pass" if r.passed else "FAIL") for r in rows]
notebooks.show_table(table, ["stage", "detail", "measured", "target", "result"], "05_parity_table", fig_dir,
                     title="Backend parity (SPEC §8)")

# %%
metrics_file = notebooks.save_metrics({
    "parity_rows": [r.as_dict() for r in rows], "all_pass": all(r.passed for r in rows),
    "n_rows": len(rows), **trained.summary,
}, fig_dir, "05_parity")
print(f"numbers written to {metrics_file}")

# %% [markdown]
# ## Summary
# - Configuration, data and the simulator are one implementation: agreement is exact.
# - The forward model agrees with the NumPy reference at float32 round-off; networks with shared weights
#   and their gradients agree far inside the targets.
# - Trained from the same start, the two backends give reconstructions of the same quality.
#
# ### Try this
# - Raise `nepochs` and watch the trained weights drift while the scores stay together.
# - Set `n_filters_scale = 2` (PtychoPINN's default width) and rerun section 3.
