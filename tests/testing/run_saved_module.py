#!/usr/bin/python3
"""Loads a `torch.save(model)` file the server wrote, as the seed tutorial does
(`model = torch.load('model.pth')`), checks it is torchvision's VGG, runs it in
eval mode and writes the output.  usage: run_saved_module.py FILE INPUT.npy OUTPUT.npy"""
import sys

import numpy as np
import torch
import torchvision

model = torch.load(sys.argv[1])
assert isinstance(model, torchvision.models.vgg.VGG), type(model)
model.eval()
with torch.inference_mode():
    y = model(torch.from_numpy(np.load(sys.argv[2])))
np.save(sys.argv[3], y.numpy())
print("ok", type(model).__name__, tuple(y.shape))
