"""Experiment: GroupNorm after every encoder/decoder conv (torch only, monkeypatched)."""
import sys
import torch.nn.functional as F
from torch import nn
from ptycholib.torch import network
from ptycholib import data
from ptycholib.studies import convergence

groups = int(sys.argv[1]) if len(sys.argv) > 1 else 8
orig_init = network._ConvPair.__init__

def init(self, width_in, width, resample):
    orig_init(self, width_in, width, resample)
    self.norm0 = nn.GroupNorm(min(groups, width), width)
    self.norm1 = nn.GroupNorm(min(groups, width), width)

def forward(self, x):
    return self.resample(F.relu(self.norm1(self.conv1(F.relu(self.norm0(self.conv0(x)))))))

network._ConvPair.__init__ = init
network._ConvPair.forward = forward
train = data.load_npz("build/data/train.npz"); test = data.load_npz("build/data/test.npz")
convergence.run_recipe("single-object", train, test, "build/study", minutes=float(sys.argv[2]) if len(sys.argv) > 2 else 4,
                       eval_every=60, label=f"single-object-groupnorm{groups}")
