#!/usr/bin/python3
"""Loads a state dict the server wrote, the seed tutorial's way, into torchvision's
model (strict), runs it in eval mode on an input and writes the output.

usage: run_saved_state_dict.py FILE ARCH INPUT.npy OUTPUT.npy
ARCH: a torchvision name (vgg16), "tiny" for the tests' tiny VGG, or template:NAME for
a class of template_models.py (lenet, cifarnet, bncnn, resnet18).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from torchvision.models import vgg as tvgg

path, arch, inp, out = sys.argv[1:5]
if arch.startswith("template:"):  # a class of tests/testing/template_models.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import template_models
    model = template_models.MODELS[arch[len("template:"):]][0]()
elif arch == "tiny":
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
