#!/usr/bin/python3
"""Python's numbers for the same file: torch.load, torch.load + load_state_dict
(file to ready), and the eager eval-mode forward pass.

usage: python_baseline.py FILE ARCH THREADS ITERS BATCH   (ARCH: a torchvision name)
"""
import json
import statistics
import sys
import time

import torch
import torchvision

path, arch, threads, iters, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
model = getattr(torchvision.models, arch)()


def timed(fn):
    t = []
    for _ in range(iters):
        s = time.perf_counter()
        fn()
        t.append((time.perf_counter() - s) * 1000)
    return statistics.median(t)


print(json.dumps({"what": "py_torch_load", "ms": round(timed(lambda: torch.load(path)), 1)}))
print(json.dumps({"what": "py_load_state_dict",
                  "ms": round(timed(lambda: model.load_state_dict(torch.load(path))), 1)}))
model.eval()
x = torch.tensor([((i * 7919) % 1000) / 1000.0 for i in range(batch * 3 * 224 * 224)],
                 dtype=torch.float32).reshape(batch, 3, 224, 224)
with torch.inference_mode():
    model(x)
    print(json.dumps({"what": f"py_forward_b{batch}", "ms": round(timed(lambda: model(x)), 1)}))
