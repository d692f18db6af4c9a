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
# # 01 · One configuration for two backends
#
# ---
#
# ## Overview
# PtychoPINN grew two configuration systems: the TensorFlow stack reads a flat, global `params.cfg`
# dict with dotted keys, and the PyTorch stack has its own dataclasses with other names and other
# defaults. The same experiment therefore meant different things on the two stacks. ptycholib has
# **one** schema, used by both backends, and treats the old formats as import/export functions.
#
# 1. The schema and its defaults
# 2. Validation: bad values fail loudly, with the field and the allowed values
# 3. Files and overrides: JSON/YAML round trips, `key=value` overrides (what papermill and the CLI pass)
# 4. PtychoPINN's legacy dict, both ways
# 5. Importing a PtychoPINN-Torch-style config, and its drift from ours
#
# ## Prerequisites
# | Concepts | Importance | Notes |
# |---|---|---|
# | Python dataclasses | Helpful | frozen = immutable after construction |
# | PtychoPINN's parameters | Helpful | `N`, `gridsize`, `nphotons`, … |
#
# *Time to learn*: 10 minutes.

# %% tags=["parameters"]
smoke: bool = False  # tiny sizes; runs in seconds (used by tests)
fig_dir: str = "../figures"  # where figures and the metrics file go
nepochs: int = 50  # an example override for section 3, two stages need at least 2
gridsize: int = 2  # another example override

# %%
import json
import tempfile
from pathlib import Path

from ptycholib import batching, config, interop, notebooks

Path(fig_dir).mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. The schema and its defaults
# Three frozen dataclasses: `ModelConfig` (the network and physics; the names ptychodus sets),
# `TrainingConfig` (optimisation, grouping, multi-stage schedule, where to run) and `InferenceConfig`
# (prediction and reassembly). `Config` bundles them. The defaults are PtychoPINN's (N = 64,
# gridsize 1, n_filters_scale 2, sigmoid amplitude, 1e9 photons, batch 16, 50 epochs, K = 4, …).

# %%
rows = config.field_table()
print(f"{len(rows)} fields")
notebooks.show_table([(section, name, repr(default), text) for section, name, default, text in rows],
                     ["section", "field", "default", "meaning"], "01_config_schema", fig_dir,
                     title="ptycholib configuration schema")

# %% [markdown]
# ## 2. Validation
# Every value is checked when a config is built. The message names the field and what is allowed,
# so a typo in a notebook parameter or a YAML file fails at once rather than an hour into training.

# %%
for bad in (["model.N=100"], ["gridsize=2", "neighbor_count=3"], ["nll_weight=0", "mae_weight=0"],
            ["amp_activation=tanh"], ["backend=jax"], ["nepoch=5"]):
    try:
        config.apply_overrides(config.Config(), bad)
    except config.ConfigError as error:
        print(f"{' '.join(bad):32s} -> {error}")

# %% [markdown]
# ## 3. Files and overrides
# Configs are saved as JSON or YAML with one section per dataclass and read back exactly.
# Papermill parameters and `ptycholib ... key=value` arguments become the same overrides: bare names
# find their section, strings are converted to the field's type.

# %%
cfg = config.apply_overrides(config.Config(), {"nepochs": nepochs, "gridsize": gridsize})
warmup = max(1, nepochs // 5)
cfg = config.apply_overrides(cfg, ["nphotons=1e6", f"stages=[{{epochs: {warmup}}}, {{epochs: {nepochs - warmup}, learning_rate_factor: 0.1}}]"])
with tempfile.TemporaryDirectory() as tmp:
    for suffix in (".json", ".yaml"):
        path = Path(tmp) / f"run{suffix}"
        config.save_config(cfg, path)
        assert config.load_config(path) == cfg
        print(f"{suffix}: round trip exact ({path.stat().st_size} bytes)")
print(json.dumps(config.config_to_dict(cfg)["training"], indent=1)[:400], "...")

# %% [markdown]
# The multi-stage schedule is expanded once, in NumPy (`ptycholib.batching`), and both backends
# follow the same list.

# %%
plan = batching.epoch_plan(cfg.training)
print([(p.epoch, p.stage, p.learning_rate) for p in plan[max(0, warmup - 2) : warmup + 2]])

# %% [markdown]
# ## 4. PtychoPINN's legacy dict
# `to_legacy_dict` writes PtychoPINN's flat dict, with its nine renamed keys (`object.big`,
# `probe.trainable`, `output_prefix`, …); `from_legacy_dict` reads it back and reports every key it
# cannot map instead of dropping it.

# %%
legacy = interop.to_legacy_dict(cfg)
back, legacy_report = interop.from_legacy_dict(legacy)
assert back == cfg
renamed = [(ours, theirs, repr(legacy[theirs])) for ours, theirs in interop.LEGACY_KEY_RENAMES.items()]
notebooks.show_table(renamed, ["ptycholib field", "PtychoPINN key", "value"], "01_legacy_keys", fig_dir,
                     title="Renamed legacy keys")

# %% [markdown]
# A dict with keys PtychoPINN knows but ptycholib does not (here three of its simulation settings) is read
# with `strict=False`: the report lists each unmapped key instead of dropping it silently.

# %%
foreign = dict(legacy, **{"offset": 4, "data_source": "lines", "max_position_jitter": 10})
_, foreign_report = interop.from_legacy_dict(foreign, strict=False)
print(foreign_report)

# %% [markdown]
# ## 5. A PtychoPINN-Torch-style config and its drift
# The PyTorch stack's defaults differ from the TensorFlow ones: `grid_size=(2, 2)`, `K=6`,
# `nphotons=1e5`, `amp_activation='silu'`. Importing such a config maps each key to our schema and
# lists what it could not map; `config_drift` then shows, field by field, how the run differs from
# ptycholib's defaults. **These are the differences that made results irreproducible.**

# %%
torch_style = {
    "data": {"N": 64, "C": 4, "K": 6, "grid_size": (2, 2), "nphotons": 1e5, "probe_scale": 4.0,
             "neighbor_function": "Nearest"},
    "model": {"mode": "Unsupervised", "amp_activation": "silu", "n_filters_scale": 2, "object_big": True,
              "probe_big": True, "intensity_scale_trainable": False, "cbam_encoder": True},
    "training": {"epochs": 50, "batch_size": 16, "learning_rate": 1e-3, "nll": True, "num_workers": 4},
}
imported, torch_report = interop.from_torch_style(torch_style, strict=False)
print(torch_report)
drift = interop.config_drift(config.Config(), imported)
notebooks.show_table([(d.key, repr(d.ours), repr(d.theirs)) for d in drift],
                     ["field", "ptycholib default", "torch-style"], "01_torch_style_drift", fig_dir,
                     title="Drift of a PtychoPINN-Torch-style config")

# %%
metrics_file = notebooks.save_metrics(
    {"n_fields": len(rows), "n_drift_fields": len(drift), "legacy_round_trip_exact": back == cfg,
     "n_unsupported_torch_keys": len(torch_report.unsupported)},
    fig_dir, "01_config_harmonization")
print(f"numbers written to {metrics_file}")

# %% [markdown]
# ## Summary
# - One schema (`ptycholib.config`) drives both backends; it validates itself and names the culprit.
# - JSON, YAML and PtychoPINN's legacy dict (`ptycholib.interop`) all round-trip exactly; foreign keys
#   are reported, never dropped.
# - A PtychoPINN-Torch config differs from ours in gridsize, activation, K and photon count — now visible.
#
# ### What's next?
# Notebook 02 simulates the data that both backends train on.
#
# ### Try this
# - Run `python -m ptycholib config show model.N=128 nepochs=5` in a terminal.
# - Change `gridsize` in the parameters cell to 3 and see which validation rule fires.
# - Import your own PtychoPINN `params.cfg` dict with `interop.from_legacy_dict(d, strict=False)`.
