#!/usr/bin/python3
"""Loads a state dict the server wrote, the seed tutorial's way, into torchvision's
model (strict), runs it in eval mode on an input and writes the output.

usage: run_saved_state_dict.py FILE ARCH INPUT.npy OUTPUT.npy
ARCH: a torchvision name (vgg16), or "tiny" for the tests' tiny VGG.
"""
import sys

import numpy as np
import torch
import torch.nn as nn
from torchvision.models import vgg as tvgg

path, arch, inp, out = sys.argv[1:5]
if arch == "tiny":
    model = tvgg.VGG(tvgg.make_layers([8, "M", 16, "M"]), num_classes=10)
    model.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    model.classifier = nn.Sequential(nn.Linear(64, 32), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(32, 10))
else:
    model = getattr(tvgg, arch)()
model.load_state_dict(torch.load(path))  # strict
model.eval()
with torch.inference_mode():
    y = model(torch.from_numpy(np.load(inp)))
np.save(out, y.numpy())
print("ok", tuple(y.shape))
