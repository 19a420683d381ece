#!/usr/bin/env python3
"""The models and the Python side of bench/int8_bench.sh.

For VGG16 and ResNet-18 (random weights, seed 0): the float model (VGG16 as a state dict
for the native architecture, ResNet-18 scripted), its FX int8 version for ENGINE
(prepare_fx / convert_fx with the engine's default qconfig mapping, calibrated on CALIB
random batches of 8), traced and frozen, each in a version directory of OUT; 64 bench
inputs; Python's eager int8 rate at batch 8 for SECONDS; and the int8 model's agreement
with float32 on the 64 inputs (top-1 agreement, worst and mean cosine of the logit rows).
Prints one JSON line per model.
Usage: int8_python.py OUT ENGINE SECONDS THREADS [CALIB]
"""
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
import torchvision
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

out, engine, seconds, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
calib = int(sys.argv[5]) if len(sys.argv) > 5 else 4
torch.manual_seed(0)
torch.set_num_threads(threads)
torch.backends.quantized.engine = engine
inputs = torch.randn(64, 3, 224, 224)
np.save(os.path.join(out, 'inputs.npy'), inputs.numpy())


def version(name):
    d = os.path.join(out, name, '1')
    os.makedirs(d, exist_ok=True)
    return d


def rate(model, batch):
    with torch.no_grad():
        model(batch)
        n, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            model(batch)
            n += batch.shape[0]
        return n / (time.monotonic() - start)


for arch in ('vgg16', 'resnet18'):
    model = getattr(torchvision.models, arch)(weights=None).eval()
    if arch == 'vgg16':
        torch.save(model.state_dict(), os.path.join(version(arch), 'model_weights.pth'))
    else:
        torch.jit.script(model).save(os.path.join(version(arch), 'model.pt'))
    x = inputs[:8]
    prepared = prepare_fx(model, get_default_qconfig_mapping(engine), example_inputs=(x,))
    with torch.no_grad():
        for _ in range(calib):
            prepared(torch.randn(8, 3, 224, 224))
        q = convert_fx(prepared)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            traced = torch.jit.freeze(torch.jit.trace(q, x).eval())
        traced.save(os.path.join(version(f'{arch}-int8'), 'model.pt'))
        ref = torch.cat([model(inputs[i:i + 8]) for i in range(0, 64, 8)])
        got = torch.cat([q(inputs[i:i + 8]) for i in range(0, 64, 8)])
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=1)
    print(json.dumps({
        'arch': arch, 'python_int8_per_s': rate(q, x),
        'top1_agreement': float((ref.argmax(1) == got.argmax(1)).float().mean()),
        'cosine_min': float(cos.min()), 'cosine_mean': float(cos.mean())}), flush=True)
