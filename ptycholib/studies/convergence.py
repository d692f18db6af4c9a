"""Convergence study: test-object quality versus training wall-clock, one line per recipe (issue 11).

A *recipe* is a set of configuration overrides on top of notebook 03's configuration (`BASE`). For
each recipe the model trains on notebook 02's training scan while, every ``--eval-every`` seconds of
training, a snapshot of the weights reconstructs the **held-out** test object and is scored with the
same code as ``ptycholib evaluate`` (`ptycholib.workflow.evaluate`). Evaluation time is not counted
as training time. Each recipe appends JSON lines to ``OUT/<recipe>.jsonl``; ``--plot`` draws SSIM
versus minutes for every file in ``OUT``.

Run one recipe at a time (2 cores: a second process halves both and every timing is wrong)::

    python -m ptycholib.studies.convergence --data build/data --out build/study --recipe single-object --minutes 8
    python -m ptycholib.studies.convergence --out build/study --plot figures/11_ssim_vs_minutes.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from ptycholib import config, data, workflow
from ptycholib.archive import ModelArchive, save_model

__all__ = ["BASE", "RECIPES", "PRESETS", "recipe_config", "run_recipe", "load_results", "plot_results", "summary_table",
           "epie_reference"]

#: The common configuration of the study: notebook 03's before issue 11, except float32 (on this CPU,
#: without AMX, bfloat16 autocast is slower than float32; the "bf16" recipe measures it).
BASE = {
    "gridsize": 2, "n_filters_scale": 1, "n_groups": 2048, "batch_size": 16, "precision": "32",
    "validation_fraction": 0.05, "neighbor_count": 7, "seed": 0, "object_big": True,
}

#: name -> (overrides on BASE, epochs). Epoch counts are sized for the minutes each recipe is given.
RECIPES = {
    "today": ({"stages": "two", "precision": "bf16-mixed"}, 24),
    "merged-patches": ({}, 40),
    "single-object": ({"object_big": False}, 40),
    "single-object-bf16": ({"object_big": False, "precision": "bf16-mixed"}, 40),
    "single-object-plateau": ({"object_big": False, "lr_schedule": "plateau"}, 40),
    "single-object-onecycle": ({"object_big": False, "lr_schedule": "onecycle"}, 24),
    "single-object-mae": ({"object_big": False, "mae_weight": 0.1}, 40),
    "single-object-log-input": ({"object_big": False, "input_transform": "log"}, 40),
    "single-object-amplitude-loss": ({"object_big": False, "nll_weight": 0.0, "mae_weight": 1.0}, 40),
    "single-object-nfs2": ({"object_big": False, "n_filters_scale": 2}, 16),
    "single-object-k4": ({"object_big": False, "neighbor_count": 4}, 40),
    "single-object-k12": ({"object_big": False, "neighbor_count": 12}, 40),
    "single-object-batch8": ({"object_big": False, "batch_size": 8}, 40),
    "gridsize1": ({"gridsize": 1}, 40),
    "single-object-gridsize3": ({"object_big": False, "gridsize": 3, "neighbor_count": 12}, 40),
}


PRESETS = Path(__file__).resolve().parents[2] / "configs"
"""The named presets (``configs/<name>.yaml``); a recipe ``preset:<name>`` trains one of them as it is."""


def recipe_config(name, *, nepochs=None, extra=None):
    """Return the `ptycholib.config.Config` of a recipe (``extra`` overrides win).

    ``name`` is a key of `RECIPES` or ``"preset:<name>"`` for ``configs/<name>.yaml``.
    """
    if name.startswith("preset:"):
        cfg = config.load_config(PRESETS / f"{name.split(':', 1)[1]}.yaml")
        if nepochs:
            cfg = config.apply_overrides(cfg, {"nepochs": int(nepochs)})
        return config.apply_overrides(cfg, extra) if extra else cfg
    overrides, epochs = RECIPES[name]
    values = {**BASE, **overrides}
    values["nepochs"] = int(nepochs or epochs)
    if values.get("stages") == "two":  # notebook 03 before issue 11: lr x 0.3 for the last third
        first = max(1, (2 * values["nepochs"]) // 3)
        values["stages"] = [{"epochs": first}, {"epochs": values["nepochs"] - first, "learning_rate_factor": 0.3}]
    cfg = config.apply_overrides(config.Config(), values)
    return config.apply_overrides(cfg, extra) if extra else cfg


def run_recipe(name, train, test, out_dir, *, minutes=None, nepochs=None, eval_every=60.0, extra=None,
               label=None, log=print):
    """Train one recipe, scoring the test object every ``eval_every`` training seconds.

    Parameters
    ----------
    name : str
        Key of `RECIPES`, or ``"preset:<name>"`` (`recipe_config`).
    train, test : ptycholib.data.PtychoData
        Training scan and held-out test scan (with its true object).
    out_dir : path
        ``<label or name>.jsonl`` is written there, one JSON record per evaluation, and the final
        model as ``<label or name>.wts.h5.zip``.
    minutes : float, optional
        Stop (at the end of an epoch) once training time exceeds this.
    nepochs : int, optional
        Epochs of the schedule (default: the recipe's).
    eval_every : float
        Training seconds between evaluations; the last epoch is always evaluated.
    extra : dict, optional
        More overrides (a dict, or ``["backend=tensorflow"]`` as on the command line).

    Returns
    -------
    list of dict
        The records: ``recipe, epoch, train_seconds, amplitude_ssim, phase_rmse, amplitude_frc50,
        amplitude_psnr, shift_px, loss, val_loss, learning_rate``.
    """
    cfg = recipe_config(name, nepochs=nepochs, extra=extra)
    label = label or name.replace("preset:", "")
    out_path = Path(out_dir) / f"{label}.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("")
    backend, model, grouped, input_scale = workflow.prepare_training(train, cfg)
    state = {"paused": 0.0, "last_eval": -math.inf, "start": None, "stop": False}
    records = []

    def score(record):
        weights = backend.network.get_weights(model)
        archive = ModelArchive(config=cfg, weights=weights, input_scale=input_scale, backend=backend.name)
        recon = workflow.reconstruct(archive, test)
        return workflow.evaluate(recon, test)

    def on_epoch(record):
        now = time.perf_counter()
        trained = now - state["start"] - state["paused"]
        last = record["epoch"] == cfg.training.nepochs - 1
        over = minutes is not None and trained >= 60 * minutes
        if trained - state["last_eval"] >= eval_every or last or over:
            scores = score(record)
            state["last_eval"] = trained
            entry = {
                "recipe": label, "epoch": record["epoch"], "train_seconds": round(trained, 2),
                **{k: scores[k] for k in ("amplitude_ssim", "phase_rmse", "amplitude_frc50", "amplitude_psnr")},
                "shift_px": scores.get("shift_px"), "loss": record["loss"], "val_loss": record["val_loss"],
                "learning_rate": record["learning_rate"],
            }
            records.append(entry)
            with open(out_path, "a") as handle:
                handle.write(json.dumps(entry) + "\n")
            log(f"[{label}] epoch {record['epoch']:3d}  {trained / 60:6.2f} min  SSIM {entry['amplitude_ssim']:.3f}  "
                f"phase RMSE {entry['phase_rmse']:.3f}  FRC50 {entry['amplitude_frc50']:.2f}")
            state["paused"] += time.perf_counter() - now
        if over:
            raise _TimeUp

    state["start"] = time.perf_counter()
    try:
        backend.training.train(
            model, grouped.inputs, grouped.offsets, grouped.amplitudes, cfg.training,
            validation_fraction=cfg.training.validation_fraction, progress=False, callback=on_epoch,
        )
    except _TimeUp:
        pass
    weights = backend.network.get_weights(model)
    save_model(Path(out_dir) / f"{label}.wts.h5.zip",
               ModelArchive(config=cfg, weights=weights, input_scale=input_scale, backend=backend.name))
    return records


class _TimeUp(Exception):
    """Raised from the epoch callback when a recipe's minutes are spent."""


def load_results(out_dir):
    """Return ``{recipe: [records]}`` from every ``*.jsonl`` in ``out_dir``."""
    results = {}
    for path in sorted(Path(out_dir).glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            results[path.stem] = rows
    return results


def plot_results(results, path=None, *, metric="amplitude_ssim", reference_lines=()):
    """Plot ``metric`` versus training minutes, one line per recipe; save to ``path`` if given.

    ``reference_lines`` is a sequence of ``(value, label)`` drawn as horizontal lines (e.g. the
    constant object's score and the targets).
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5))
    styles = ["-", "--", ":", "-."]
    for k, (name, rows) in enumerate(results.items()):
        ax.plot([r["train_seconds"] / 60 for r in rows], [r[metric] for r in rows], marker="o", ms=3, label=name,
                linestyle=styles[(k // 10) % len(styles)])
    for level, text in reference_lines:
        ax.axhline(level, color="grey", linewidth=0.8, linestyle="--")
        ax.annotate(text, (0.01, level), xycoords=("axes fraction", "data"), fontsize=7, color="grey",
                    va="bottom")
    ax.set_xlabel("training time on 2 CPU cores (minutes, evaluation excluded)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title("Held-out test object versus training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def epie_reference(test, *, n_iterations=30, crop_size=20):
    """ePIE with the known probe on the test scan, scored as the network is (the study's reference).

    Returns
    -------
    dict
        `ptycholib.workflow.evaluate`'s scores over the scanned region (each position's central
        ``crop_size`` window), plus ``seconds`` and ``n_iterations``.
    """
    from ptycholib import baseline, metrics

    result = baseline.epie(test.amplitudes, test.x_px, test.y_px, test.probe, test.obj.shape,
                           n_iterations=n_iterations, engine="numpy")
    region = metrics.scanned_region_mask(test.x_px, test.y_px, test.obj.shape, crop_size)
    return {**workflow.evaluate(result.obj, test, mask=region), "seconds": result.seconds,
            "n_iterations": n_iterations}


def _at_minutes(rows, minutes):
    """The last evaluation at or before ``minutes`` of training (None if there is none)."""
    before = [r for r in rows if r["train_seconds"] <= 60 * minutes + 1e-6]
    return before[-1] if before else None


def summary_table(results, *, at_minutes=(1.5, 3.0)):
    """Markdown table: per recipe, SSIM at given training minutes, and its last evaluation.

    Returns
    -------
    str
        Columns: recipe, amplitude SSIM after each of ``at_minutes`` (last evaluation at or before),
        then the last evaluation's minutes, epochs, SSIM, phase RMSE and FRC50; recipes sorted by their
        SSIM at the last of ``at_minutes``.
    """
    head = ["recipe"] + [f"SSIM @ {m:g} min" for m in at_minutes] + [
        "last eval (min)", "epochs", "SSIM", "phase RMSE (rad)", "FRC50 (x Nyquist)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def key(item):
        row = _at_minutes(item[1], at_minutes[-1])
        return -(row["amplitude_ssim"] if row else 0.0)

    for name, rows in sorted(results.items(), key=key):
        cells = [name]
        for minutes in at_minutes:
            row = _at_minutes(rows, minutes)
            cells.append(f"{row['amplitude_ssim']:.3f}" if row else "–")
        last = rows[-1]
        cells += [f"{last['train_seconds'] / 60:.1f}", str(last["epoch"] + 1), f"{last['amplitude_ssim']:.3f}",
                  f"{last['phase_rmse']:.3f}", f"{last['amplitude_frc50']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ptycholib.studies.convergence", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="build/data", help="folder with train.npz and test.npz (notebook 02)")
    parser.add_argument("--out", default="build/study", help="folder for <recipe>.jsonl")
    parser.add_argument("--recipe", action="append", default=[], help=f"recipe(s) to run: {', '.join(RECIPES)}, "
                        "or preset:NAME for configs/NAME.yaml")
    parser.add_argument("--label", help="file name instead of the recipe name (one recipe)")
    parser.add_argument("--minutes", type=float, help="training-time cap per recipe")
    parser.add_argument("--nepochs", type=int, help="epochs of the schedule (default: the recipe's)")
    parser.add_argument("--eval-every", type=float, default=60.0, help="training seconds between evaluations")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    parser.add_argument("--plot", help="draw SSIM vs minutes of every result in --out to this PNG")
    parser.add_argument("--table", action="store_true", help="print the markdown summary of every result in --out")
    parser.add_argument("--epie", type=int, metavar="N", help="also score N ePIE sweeps (known probe) on --data's test "
                        "scan; writes OUT/epie-<label>.json")
    args = parser.parse_args(argv)
    extra = args.set or None
    if args.recipe:
        train = data.load_npz(Path(args.data) / "train.npz")
        test = data.load_npz(Path(args.data) / "test.npz")
        for name in args.recipe:
            run_recipe(name, train, test, args.out, minutes=args.minutes, nepochs=args.nepochs,
                       eval_every=args.eval_every, extra=extra, label=args.label)
    if args.epie:
        test = data.load_npz(Path(args.data) / "test.npz")
        scores = epie_reference(test, n_iterations=args.epie)
        path = Path(args.out) / f"epie-{args.label or Path(args.data).name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scores, indent=1, default=float))
        print(f"ePIE {args.epie} sweeps: amplitude SSIM {scores['amplitude_ssim']:.3f}, phase RMSE "
              f"{scores['phase_rmse']:.3f} rad, FRC50 {scores['amplitude_frc50']:.2f}, {scores['seconds']:.1f} s -> {path}")
    if args.plot:
        lines = [(0.85, "target in the main job (0.85)"), (0.93, "target within 60 min (0.93)")]
        if Path(args.data, "test.npz").is_file():
            from ptycholib import metrics

            test = data.load_npz(Path(args.data) / "test.npz")
            region = metrics.scanned_region_mask(test.x_px, test.y_px, test.obj.shape, 20)
            flat = metrics.constant_object_baseline(test.obj, mask=region)["amplitude_ssim"]
            lines.append((flat, f"constant object ({flat:.2f})"))
        plot_results(load_results(args.out), args.plot, reference_lines=lines)
    if args.table:
        print(summary_table(load_results(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
