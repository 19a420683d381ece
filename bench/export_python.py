#!/usr/bin/env python3
"""The models and the Python side of bench/export_bench.sh (run where torch has
torch.export: Debian 13's torch 2.6).

ResNet-18 (random weights, seed 0, eval): exported with a dynamic batch and saved with
torch.export.save, scripted (torch.jit.script), and compiled by AOTInductor
(aoti_compile_and_package, with the program as architecture.pt2), each in a version
directory of OUT; Python's rate of the compiled package (aoti_load_package) too;
Python's eager rate at batch 8 and the exported program's (`ep.module()`) for SECONDS
each; whether the served program agrees with eager on one batch is the test suite's
business (export_test), not the bench's. Prints one JSON line.
Usage: export_python.py OUT SECONDS THREADS
"""
import json
import os
import sys
import time

import torch
import torchvision

out, seconds, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
torch.set_num_threads(threads)
model = torchvision.models.resnet18(weights=None).eval()
x = torch.randn(8, 3, 224, 224)


def version(name):
    d = os.path.join(out, name, '1')
    os.makedirs(d, exist_ok=True)
    return d


def rate(fn, batch):
    with torch.inference_mode():
        for _ in range(3):
            fn(batch)
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            fn(batch)
            n += batch.shape[0]
        return n / (time.monotonic() - t0)


dim = torch.export.Dim('batch', min=1, max=64)
ep = torch.export.export(model, (x,), dynamic_shapes=({0: dim},))
torch.export.save(ep, os.path.join(version('resnet18-export'), 'model.pt2'))
torch.jit.script(model).save(os.path.join(version('resnet18-torchscript'), 'model.pt'))
module = torch.export.load(os.path.join(out, 'resnet18-export', '1', 'model.pt2')).module()
# The same program compiled by AOTInductor, with the program beside it (its input shapes).
aoti_dir = version('resnet18-aoti')
t0 = time.monotonic()
package = torch._inductor.aoti_compile_and_package(
    ep, package_path=os.path.join(aoti_dir, 'model.pt2'))
compile_s = time.monotonic() - t0
torch.export.save(ep, os.path.join(aoti_dir, 'architecture.pt2'))
compiled = torch._inductor.aoti_load_package(package)
print(json.dumps({'torch': torch.__version__, 'eager_b8_per_s': rate(model, x),
                  'ep_module_b8_per_s': rate(module, x), 'aoti_b8_per_s': rate(compiled, x),
                  'aoti_compile_s': compile_s}))
