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
# # 04 · Inference, reassembly and honest scores
#
# ---
#
# ## Overview
# A trained model turns each group of diffraction patterns into object patches in milliseconds. To be
# useful, the patches must land on the sample's **own pixel grid** and the result must be scored fairly
# against what a user would otherwise run. This notebook:
#
# 1. reconstructs the test scan with notebook 03's model (trained by either backend, predicted by either);
# 2. reassembles the patches at their absolute positions (no re-centring);
# 3. scores amplitude and phase against the truth: SSIM, PSNR, phase RMSE, FRC curves;
# 4. compares with the supervised baseline and an iterative ePIE solver on the same data, with times;
# 5. refines the network's answer through the physics and compares it with a flat start and ePIE.
#
# ## Prerequisites
# | Concepts | Importance | Notes |
# |---|---|---|
# | Notebooks 02 and 03 | Necessary | they write the test scan and the model archives |
# | SSIM / FRC | Helpful | FRC: correlation per spatial-frequency ring; 0.5 and ½-bit thresholds |
#
# *Time to learn*: 15 minutes; the ePIE cell takes about a minute.

# %% tags=["parameters"]
backend: str = "torch"  # backend that predicts: "torch" or "tensorflow"
trained_with: str = ""  # backend whose archive to load from notebook 03; empty: the same as backend
smoke: bool = False  # tiny sizes; runs in seconds (used by tests)
fig_dir: str = "../figures"  # where figures and the metrics file go
data_dir: str = "../build/data"  # notebook 02's test.npz
model_dir: str = "../build/models"  # notebook 03's archives: {model_dir}/{trained_with}/wts.h5.zip
epie_iterations: int = 30  # ePIE sweeps over the scan
refine_max: int = 6  # most refinement sweeps in section 5 (scored at 1, 2, 3, 4, 6, ... up to this)
refine_alpha: float = 0.1  # rPIE step regulariser of the refinement (1 is the ePIE step)
low_dose_alpha: float = 1.0  # the same at low dose (test_low.npz), where small values amplify noise
crop_size: int = 20  # central crop of each patch placed on the canvas (SPEC 7)

# %%
from pathlib import Path

from ptycholib import archive, baseline, config, data, metrics, notebooks, plotting, refine, workflow

trained_with = trained_with or backend
if smoke:
    epie_iterations = 2
    refine_max = 1
Path(fig_dir).mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. Load the model and the test scan
# The archive records which backend trained it; `backend` chooses which one predicts. The weights are
# backend-neutral, so the two can differ.

# %%
test_data = data.load_npz(Path(data_dir) / "test.npz")
model = archive.load_model(Path(model_dir) / trained_with / archive.DEFAULT_NAME)
inference = config.InferenceConfig(crop_size=crop_size, batch_size=model.config.inference.batch_size)
print(f"model trained with {model.backend} (gridsize {model.config.model.gridsize}); predicting with {backend}; "
      f"{test_data.n_positions} test positions")

# %% [markdown]
# ## 2. Reconstruct and reassemble
# Every scan position seeds one group, the network predicts the group's patches, and the central
# `crop_size × crop_size` of every patch is placed at its absolute position with bilinear weights (one
# scatter-add, no Python loop). Reassembly should cost a small fraction of the network's time.

# %%
recon = workflow.reconstruct(model, test_data, backend=backend, inference=inference)
scanned = recon.region
print(f"network {recon.inference_seconds:.2f} s, reassembly {recon.reassembly_seconds:.3f} s "
      f"({recon.reassembly_seconds / recon.inference_seconds:.3f} of inference)")

# %% [markdown]
# ## 3. Baselines on the same data
# **Supervised**: the same network trained against true patches (notebook 03). **ePIE**: the classic
# iterative solver with the known probe, positions kept sub-pixel (our NumPy engine). PtyLab's ePIE rounds
# positions to whole pixels, which caps its quality on sub-pixel scans; it runs here only if installed.
# *This is the slow cell.*

# %%
results = {f"PINN ({trained_with}→{backend})": recon.obj}
seconds = {f"PINN ({trained_with}→{backend})": recon.inference_seconds + recon.reassembly_seconds}
supervised_path = Path(model_dir) / trained_with / "supervised" / archive.DEFAULT_NAME
if supervised_path.exists():
    supervised = workflow.reconstruct(supervised_path, test_data, backend=backend, inference=inference)
    results["supervised"] = supervised.obj
    seconds["supervised"] = supervised.inference_seconds + supervised.reassembly_seconds
epie = baseline.epie(test_data.amplitudes, test_data.x_px, test_data.y_px, test_data.probe, test_data.obj.shape,
                     n_iterations=epie_iterations, engine="numpy")
results["ePIE (sub-pixel)"], seconds["ePIE (sub-pixel)"] = epie.obj, epie.seconds
if baseline.ptylab_available():
    ptylab = baseline.epie(test_data.amplitudes, test_data.x_px, test_data.y_px, test_data.probe, test_data.obj.shape,
                           n_iterations=epie_iterations, engine="ptylab")
    results["PtyLab ePIE (whole px)"], seconds["PtyLab ePIE (whole px)"] = ptylab.obj, ptylab.seconds

# %% [markdown]
# ## 4. Scores
# All methods are scored on the region the network reconstructed, after removing one global complex
# factor (phase offset and amplitude scale are not observable) and a sub-pixel registration. SSIM and PSNR
# use the true amplitude's range as `data_range`; FRC resolutions are fractions of Nyquist.
# The printout also gives the score of a **constant object** on the same region: SSIM does not start at 0,
# so a model's score means something only as a margin over that floor. The project's target is an
# amplitude SSIM of **0.85** on this test object (which the model never saw) inside the main job. With
# the `cpu-quick` preset (about six minutes of float32 training on 2 cores) the main job measured
# **0.52** (a constant object: 0.25), ePIE 0.997: the network resolves the coarse structure of the lines
# but not their edges (FRC 0.5 at about 0.13 of Nyquist). The target is **not met**. How far longer training and other recipes get
# is measured in docs/results.md (SSIM versus CPU-minutes, `figures/11_ssim_vs_minutes.png`).

# %%
scores = {label: workflow.evaluate(obj, test_data, mask=scanned) for label, obj in results.items()}
rows = [(label, f"{s['amplitude_ssim']:.3f}", f"{s['amplitude_psnr']:.1f}", f"{s['phase_rmse']:.3f}",
         f"{s['amplitude_frc50']:.2f}", f"{seconds[label]:.2f}") for label, s in scores.items()]
pinn_label = next(iter(results))
flat = metrics.constant_object_baseline(test_data.obj, mask=scanned)["amplitude_ssim"]
pinn_ssim = scores[pinn_label]["amplitude_ssim"]
print(f"PINN amplitude SSIM {pinn_ssim:.3f}: {pinn_ssim - flat:+.3f} over a constant object ({flat:.3f}); "
      f"issue-11 target 0.85 in the main job: {'met' if pinn_ssim >= 0.85 else 'not met'}")
notebooks.show_table(rows, ["method", "amp. SSIM", "amp. PSNR (dB)", "phase RMSE (rad)", "amp. FRC 0.5", "time (s)"],
                     f"04_scores_{backend}", fig_dir, title="Test scan: scores and times")

# %% [markdown]
# The reconstructions beside the truth, amplitude above phase, each aligned to the truth (global factor
# and sub-pixel shift removed) and shown on the scanned region only.

# %%
notebooks.show(plotting.compare_objects(test_data.obj, results, mask=scanned), f"04_objects_{backend}", fig_dir)

# %% [markdown]
# Where each reconstruction errs: amplitude error and wrapped phase error against the truth, each panel on
# its own colour scale. The network's amplitude errors follow the lines (it blurs them); ePIE's are about ten
# times smaller, and its phase error is mostly a smooth ramp.

# %%
notebooks.show(plotting.error_maps(test_data.obj, results, mask=scanned), f"04_errors_{backend}", fig_dir)

# %% [markdown]
# Fourier ring correlation of each amplitude with the truth's: where a curve falls below the 0.5 or ½-bit
# threshold is the finest resolved period, as a fraction of Nyquist.

# %%
frc_results = {label: metrics.frc(*metrics.align_to_truth(obj, test_data.obj, mask=scanned).amplitudes())
               for label, obj in results.items()}
notebooks.show(plotting.frc_curves(frc_results), f"04_frc_{backend}", fig_dir)

# %% [markdown]
# ## 5. From the network's answer to the data's
# The network's answer need not be the end: `ptycholib.refine` minimises the misfit to the measured
# diffraction directly over the object canvas, through the same far-field model, in mini-batches of
# positions (the rPIE step rule with `refine_alpha`; `refine_alpha = 1` is exactly ePIE's step). The
# question is whether starting from the network beats starting from a flat object, and what the network's
# inference costs in time. Each curve is one run of this process on the same threads; the network's points
# include its inference and reassembly; ePIE is section 3's run. *This cell takes about half a minute.*
#
# Measured in the main job of 2026-12-02 (2 cores, the `cpu-quick` model; inference on issue 15's fast path):
# the network's answer (SSIM 0.52) took 3.0 s (6.2–6.4 s before that path); from it, 4 sweeps reach 0.9986 at
# 4.8 s, **0.28× the time of ePIE-30** (0.9975 in 16.8 s). From a flat start the same 4 sweeps reach 0.9983
# in 1.7 s (0.10×). The network's start is ahead by at most 0.0004 after 2–6 sweeps and *behind* after the
# first (0.980 against 0.981), while its inference still costs as much time as half a dozen sweeps: on this
# high-dose scan the refinement's step rule does the work, and the blur the network predicts is worth less
# than its inference time. docs/results.md has the low-dose (1e4 photons)
# comparison, where ePIE's step (`refine_alpha = 1`) wins and a network trained at that dose is the better start.

# %%
iterations = [i for i in (1, 2, 3, 4, 6, 8, 12, 16) if i <= refine_max]
comparison = refine.compare_starts(model, test_data, iterations, reconstruction=recon, epie_iterations=0,
                                   mask=scanned, backend=backend, alpha=refine_alpha)
comparison.append({"method": "ePIE", "iterations": epie_iterations, "seconds": epie.seconds,  # section 3's run
                   "amplitude_ssim": scores["ePIE (sub-pixel)"]["amplitude_ssim"],
                   "phase_rmse": scores["ePIE (sub-pixel)"]["phase_rmse"]})
epie_target = comparison[-1]["amplitude_ssim"]
for row in comparison:
    print(f"{row['method']:<18} {row['iterations']:>3} sweeps  {row['seconds']:7.2f} s  "
          f"SSIM {row['amplitude_ssim']:.4f}  phase RMSE {row['phase_rmse']:.3f} rad")
epie_seconds = comparison[-1]["seconds"]
for method in ("network + refine", "flat + refine"):
    reached = [r for r in comparison if r["method"] == method and r["amplitude_ssim"] >= epie_target]
    if reached:
        print(f"{method} reaches ePIE-{epie_iterations}'s SSIM in {reached[0]['seconds'] / epie_seconds:.2f}× its time "
              f"({reached[0]['iterations']} sweeps)")
    else:
        print(f"{method} does not reach ePIE-{epie_iterations}'s SSIM within {refine_max} sweeps")
fig = plotting.quality_versus_time(comparison, target=epie_target,
                                   title=f"Amplitude SSIM versus seconds (dashed: ePIE-{epie_iterations})")
notebooks.show(fig, f"04_refine_{backend}", fig_dir)

# %% [markdown]
# ### The same comparison at low dose
# Notebook 02 also wrote the test scan at `low_nphotons` (1e4 photons per pattern by default). At this dose
# a small `refine_alpha` amplifies the noise, so the refinement uses ePIE's own step (`low_dose_alpha = 1`),
# and the model was trained at the high dose. Measured in the main job: ePIE-30 0.8812 in 15.2 s; the flat start
# reaches 0.8810 after 16 sweeps in 6.6 s (0.43× the time); the high-dose network's start (0.21) is *behind* the flat one at
# every sweep count (0.808 against 0.823 after one sweep). docs/results.md compares a network trained at this
# dose too: it is ahead of the flat start at every count, but its inference makes it slower to ePIE-30's score.

# %%
test_low = data.load_npz(Path(data_dir) / "test_low.npz")  # written by notebook 02
low_iterations = [1] if smoke else [1, 2, 4, 8, 16]
low_comparison = refine.compare_starts(model, test_low, low_iterations, epie_iterations=epie_iterations,
                                       mask=scanned, backend=backend, alpha=low_dose_alpha)
low_target = low_comparison[-1]["amplitude_ssim"]
for row in low_comparison:
    print(f"{row['method']:<18} {row['iterations']:>3} sweeps  {row['seconds']:7.2f} s  "
          f"SSIM {row['amplitude_ssim']:.4f}")
fig = plotting.quality_versus_time(low_comparison, target=low_target,
                                   title=f"Low dose: amplitude SSIM versus seconds (dashed: ePIE-{epie_iterations})")
notebooks.show(fig, f"04_refine_low_{backend}", fig_dir)

# %%
metrics_file = notebooks.save_metrics({
    "backend": backend, "trained_with": trained_with, **scores[pinn_label],
    "inference_seconds": recon.inference_seconds, "reassembly_seconds": recon.reassembly_seconds,
    "reassembly_fraction": recon.reassembly_seconds / recon.inference_seconds,
    "methods": [{"method": label, "amplitude_ssim": s["amplitude_ssim"], "phase_rmse": s["phase_rmse"],
                 "amplitude_frc50": s["amplitude_frc50"], "seconds": seconds[label]} for label, s in scores.items()],
    "refinement": comparison,
    "refinement_low_dose": low_comparison,
}, fig_dir, f"04_inference_{backend}")
print(f"numbers written to {metrics_file}")

# %% [markdown]
# ## Summary
# - The reconstruction lands on the test object's own pixel grid; reassembly is a vectorised scatter-add.
# - Scores are standard (explicit data ranges, global factor removed, FRC curves rather than one number).
# - The physics-informed model never saw a true object, yet scores above the supervised baseline (three
#   epochs against true patches, 0.32 in the main job) — but only 0.28 above a constant object. At this
#   high dose and overlap ePIE with the known probe is far better after 30 sweeps (0.997); the network's
#   strengths are one fast pass per scan once trained and no iterations at inference, and on 2 CPU cores
#   its training is still far from converged (docs/results.md).
#
# ### What's next?
# Notebook 05 measures, stage by stage, how closely the two backends agree.
#
# ### Try this
# - Set `trained_with = "tensorflow"` and `backend = "torch"`: a TF-trained model predicting in PyTorch.
# - Raise `epie_iterations` and watch ePIE's score and time grow.
# - Set `refine_alpha = 1` (ePIE's step): the refinement slows down and the network's start helps more.
# - Set `crop_size = 32` and compare the SSIM: larger crops use the network's less reliable border.
