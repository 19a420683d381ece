#!/usr/bin/python3
"""Loads a TorchScript file the server wrote with torch.jit.load, runs it on an
input and writes the output.  usage: run_saved_torchscript.py FILE INPUT.npy OUTPUT.npy"""
import sys

import numpy as np
import torch

m = torch.jit.load(sys.argv[1])
m.eval()
with torch.inference_mode():
    y = m(torch.from_numpy(np.load(sys.argv[2])))
np.save(sys.argv[3], y.numpy())
print("ok", tuple(y.shape))
