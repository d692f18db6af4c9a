set -x
export OMP_NUM_THREADS=2
P=".venv/bin/python -m ptycholib"
$P simulate --probe disk --seed 3 --n-train 64 --n-test 900 --out build/ft_disk
$P reconstruct --model build/models/torch/wts.h5.zip --data build/ft_disk/test.npz --out build/ft_disk/before.npz
$P evaluate --recon build/ft_disk/before.npz --truth build/ft_disk/test.npz --json > build/ft_disk/before.json
$P train --init build/models/torch/wts.h5.zip --data build/ft_disk/test.npz --out build/ft_disk/model --no-progress nepochs=4 n_groups=900
$P reconstruct --model build/ft_disk/model --data build/ft_disk/test.npz --out build/ft_disk/after.npz
$P evaluate --recon build/ft_disk/after.npz --truth build/ft_disk/test.npz --json > build/ft_disk/after.json
$P train --init build/models/torch/wts.h5.zip --data build/ft_disk/test.npz --out build/ft_disk/model_frozen --no-progress nepochs=4 n_groups=900 'stages=[{"epochs": 4, "freeze_encoder": true, "learning_rate_factor": 0.3}]'
$P reconstruct --model build/ft_disk/model_frozen --data build/ft_disk/test.npz --out build/ft_disk/frozen.npz
$P evaluate --recon build/ft_disk/frozen.npz --truth build/ft_disk/test.npz --json > build/ft_disk/frozen.json
