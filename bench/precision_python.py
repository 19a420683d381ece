#!/usr/bin/env python3
"""Python's side of the precision benchmark (bench/precision_bench.sh, bench/gpu_check.sh).

Writes, under OUT (once; reused by later runs):
  OUT/vgg16/1/model_weights.pth      torchvision vgg16(), random weights (seed 0)
  OUT/vgg16_sep/1/model_weights.pth  the same with the last layer's rows scaled by
                                     log-normal factors, so that logits are well separated
  OUT/inputs.npy                     64 inputs [64,3,224,224] float32 (ImageNet-normalised noise)
  OUT/vgg16_ref.npy, OUT/vgg16_sep_ref.npy   Python eager float32 NCHW outputs of those inputs
then times Python eager modes at BATCH for SECONDS each and prints one JSON object
per mode: {"what": "python", "mode": ..., "batch": ..., "samples_per_s": ...}.

  precision_python.py OUT DEVICE BATCH SECONDS THREADS
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torchvision

out, device, batch, seconds, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    float(sys.argv[4]), int(sys.argv[5])
if threads > 0:
    torch.set_num_threads(threads)
dev = torch.device(device)
N = 64


def build():
    torch.manual_seed(0)
    model = torchvision.models.vgg16().eval()
    sd = model.state_dict()
    sep = {k: v.clone() for k, v in sd.items()}
    g = torch.Generator().manual_seed(1)
    sep['classifier.6.weight'] *= torch.exp(torch.randn(1000, 1, generator=g))
    for name, state in (('vgg16', sd), ('vgg16_sep', sep)):
        d = os.path.join(out, name, '1')
        os.makedirs(d, exist_ok=True)
        torch.save(state, os.path.join(d, 'model_weights.pth'))
    x = (torch.rand(N, 3, 224, 224, generator=g) - torch.tensor([0.485, 0.456, 0.406])
         .view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    np.save(os.path.join(out, 'inputs.npy'), x.numpy().astype(np.float32))
    for name, state in (('vgg16', sd), ('vgg16_sep', sep)):
        m = torchvision.models.vgg16().eval()
        m.load_state_dict(state)
        with torch.inference_mode():
            y = torch.cat([m(x[i:i + 8]) for i in range(0, N, 8)])
        np.save(os.path.join(out, f'{name}_ref.npy'), y.numpy())


if not os.path.exists(os.path.join(out, 'vgg16_sep_ref.npy')):
    build()


def timed(model, x, autocast=None):
    def run():
        if autocast is not None:
            with torch.autocast(device_type=dev.type, dtype=autocast):
                return model(x)
        return model(x)

    with torch.inference_mode():
        for _ in range(2):
            run()
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            run()
            n += x.shape[0]
            if dev.type == 'cuda' and n % (8 * x.shape[0]) == 0:
                torch.cuda.synchronize()
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        return n / (time.perf_counter() - start)


sd = torch.load(os.path.join(out, 'vgg16', '1', 'model_weights.pth'))
if dev.type == 'cuda':
    torch.backends.cudnn.benchmark = True
modes = [('fp32', torch.float32, False, None), ('fp32_channels_last', torch.float32, True, None),
         ('bf16_channels_last', torch.bfloat16, True, None),
         ('autocast_bf16_channels_last', torch.float32, True, torch.bfloat16)]
if dev.type == 'cuda':
    modes.insert(2, ('fp16_channels_last', torch.float16, True, None))
for name, dtype, cl, autocast in modes:
    model = torchvision.models.vgg16().eval()
    model.load_state_dict(sd)
    model = model.to(dev).to(dtype)
    x = torch.randn(batch, 3, 224, 224, device=dev).to(dtype)
    if cl:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    rate = timed(model, x, autocast)
    print(json.dumps({'what': 'python', 'mode': name, 'batch': batch,
                      'samples_per_s': round(rate, 3)}), flush=True)
    del model
