import sys, time, numpy as np, torch
torch.set_num_threads(1)
from ptycholib import data as D, refine, workflow, metrics
test = D.load_npz('build/data/test.npz')
shape = test.obj.shape
region = metrics.scanned_region_mask(test.x_px, test.y_px, shape, 20)
net, secs = refine.network_start('build/models/torch/wts.h5.zip', test, shape)
print('net start s', secs, flush=True)
snaps = (1, 2, 4, 6, 8, 12, 16)
for label, init, opts in [
    ('flat a1', None, {}), ('net a1', net, {}), ('net a1 rescale', net, {'rescale_start': True}),
    ('flat a.3', None, {'alpha': 0.3}), ('net a.3', net, {'alpha': 0.3}),
    ('flat a.1', None, {'alpha': 0.1}), ('net a.1', net, {'alpha': 0.1}),
]:
    r = refine.refine(None, test, initial_object=init, n_iterations=16, snapshots=snaps, **opts)
    print(label, ' '.join(f"{k}:{workflow.evaluate(o, test, mask=region)['amplitude_ssim']:.4f}" for k, (o, t) in sorted(r.snapshots.items())), f"{r.seconds:.1f}s", flush=True)
