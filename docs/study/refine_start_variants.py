import numpy as np, torch
torch.set_num_threads(1)
from ptycholib import data as D, refine, workflow, metrics, baseline
test = D.load_npz('build/data/test.npz')
shape = test.obj.shape
region = metrics.scanned_region_mask(test.x_px, test.y_px, shape, 20)
net, secs = refine.network_start('build/models/torch/wts.h5.zip', test, shape)
probe = refine._effective_probe(test.amplitudes, test.probe, True)
c_ls = refine.fit_object_scale(net, probe, test.amplitudes, test.x_px, test.y_px)
print('c_ls', c_ls, 'mean|net| region', np.abs(net[region]).mean(), 'rms', np.sqrt((np.abs(net[region])**2).mean()), 'true mean', np.abs(test.obj[region]).mean(), flush=True)
rms = np.sqrt((np.abs(net[region])**2).mean())
net_e = net.copy(); net_e[region] = net[region] / rms
snaps = (1, 2, 3, 4, 6, 8)
for a in (1.0, 0.3, 0.1):
  for label, init in [('flat', None), ('net', net), ('net rms1', net_e), ('net phase', np.exp(1j*np.angle(net)).astype(np.complex64))]:
    r = refine.refine(None, test, initial_object=init, n_iterations=8, snapshots=snaps, alpha=a)
    print(a, label, ' '.join(f"{k}:{workflow.evaluate(o, test, mask=region)['amplitude_ssim']:.4f}" for k, (o, t) in sorted(r.snapshots.items())), flush=True)
