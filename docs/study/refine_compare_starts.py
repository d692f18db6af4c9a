import json, torch
torch.set_num_threads(1)
from ptycholib import data as D, refine, plotting
test = D.load_npz('build/data/test.npz')
rows = refine.compare_starts('build/models/torch/wts.h5.zip', test, (1, 2, 3, 4, 6, 8), alpha=0.1)
for r in rows: print(r)
json.dump(rows, open('build/scratch/cmp.json', 'w'))
plotting.quality_versus_time(rows, target=rows[-1]['amplitude_ssim']).savefig('build/scratch/cmp.png', dpi=100)
