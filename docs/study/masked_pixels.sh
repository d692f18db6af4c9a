#!/usr/bin/env bash
# Issue 16: does masking bad detector pixels out of the loss work? Three torch models trained with the same
# recipe and seed on notebook 02's scans (build/data, from `make run`): clean data; 5 % of the detector's
# pixels set to garbage and marked in `bad_pixels`; the same garbage unmarked. Each model reconstructs the
# matching test scan and is scored with `ptycholib evaluate`.  Usage: docs/study/masked_pixels.sh [OUT]
set -euo pipefail
OUT=${1:-build/study/masked}
PY=${PY:-.venv/bin/python}
RECIPE=(--config configs/cpu-quick.yaml n_groups=2048 nepochs=8 seed=0)
mkdir -p "$OUT"
$PY - "$OUT" <<'PYEOF'
import dataclasses, sys
import numpy as np
from ptycholib import data
out = sys.argv[1]
rng = np.random.default_rng(16)
for split in ("train", "test"):
    clean = data.load_npz(f"build/data/{split}.npz")
    n = clean.patch_size
    if split == "train":
        bad = np.zeros((n, n), bool)
        bad.flat[rng.choice(n * n, size=round(0.05 * n * n), replace=False)] = True
    garbage = clean.amplitudes.copy()
    # garbage: each bad pixel reads a random amplitude up to the brightest pixel's, frame by frame
    garbage[:, bad] = rng.uniform(0, clean.amplitudes.max(), size=(len(garbage), int(bad.sum()))).astype(garbage.dtype)
    data.save_npz(clean, f"{out}/{split}_clean.npz")
    data.save_npz(dataclasses.replace(clean, amplitudes=garbage, bad_pixels=bad), f"{out}/{split}_masked.npz")
    data.save_npz(dataclasses.replace(clean, amplitudes=garbage), f"{out}/{split}_unmasked.npz")
print(f"{int(bad.sum())} bad pixels of {bad.size}")
PYEOF
for case in clean masked unmasked; do
  $PY -m ptycholib train --data "$OUT/train_$case.npz" --backend torch --out "$OUT/model_$case" --overwrite --no-progress "${RECIPE[@]}"
  $PY -m ptycholib reconstruct --model "$OUT/model_$case" --data "$OUT/test_$case.npz" --out "$OUT/recon_$case.npz"
  $PY -m ptycholib evaluate --recon "$OUT/recon_$case.npz" --truth build/data/test.npz --json > "$OUT/scores_$case.json"
  echo "$case: $(cat "$OUT/scores_$case.json" | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["amplitude_ssim"], d["phase_rmse"])')"
done
