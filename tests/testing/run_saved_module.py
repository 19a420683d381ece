#!/usr/bin/python3
"""Loads a `torch.save(model)` file the server wrote, as the seed tutorial does
(`model = torch.load('model.pth')`), checks it is torchvision's VGG, runs it in
eval mode and writes the output.  usage: run_saved_module.py FILE INPUT.npy OUTPUT.npy

On torch >= 2.6, whose `torch.load` reads only weights by default, the file loads
with exactly the classes of a VGG allowlisted (`torch.serialization.safe_globals`),
which also shows it names no other global; the tutorial's plain line needs
`weights_only=False` there (the README says so)."""
import sys

import numpy as np
import torch
import torchvision
from torch import nn

if hasattr(torch.serialization, "safe_globals"):
    vgg_classes = [torchvision.models.vgg.VGG, nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.ReLU,
                   nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear, nn.Dropout]
    with torch.serialization.safe_globals(vgg_classes):
        model = torch.load(sys.argv[1], weights_only=True)
    print("loaded with weights_only=True and the VGG classes allowlisted")
else:
    model = torch.load(sys.argv[1])
assert isinstance(model, torchvision.models.vgg.VGG), type(model)
model.eval()
with torch.inference_mode():
    y = model(torch.from_numpy(np.load(sys.argv[2])))
np.save(sys.argv[3], y.numpy())
print("ok", type(model).__name__, tuple(y.shape))
