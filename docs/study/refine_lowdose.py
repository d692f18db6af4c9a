import json, torch
torch.set_num_threads(1)
from ptycholib import data as D, refine
test = D.load_npz('build/data_1e4/test.npz')
out = {}
for label, model in (("1e9 model", 'build/models/torch/wts.h5.zip'), ("1e4 model", 'build/study_1e4/cpu-quick-1e4.wts.h5.zip')):
    for alpha in (1.0, 0.3, 0.1):
        rows = refine.compare_starts(model, test, (1, 2, 4, 8, 16), alpha=alpha)
        out[f"{label}, alpha {alpha}"] = rows
        for r in rows: print(label, alpha, r, flush=True)
json.dump(out, open('build/scratch/lowdose.json', 'w'), indent=1)
