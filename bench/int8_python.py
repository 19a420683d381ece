#!/usr/bin/env python3
"""The models and the Python side of bench/int8_bench.sh.

For VGG16 and ResNet-18 (random weights, seed 0): the float model (VGG16 as a state dict
for the native architecture, ResNet-18 scripted), its FX int8 version for ENGINE
(prepare_fx / convert_fx with the engine's default qconfig mapping, calibrated on CALIB
random batches of 8), traced and frozen, each in a version directory of OUT; 64 bench
inputs; Python's eager int8 rate at batch 8 for SECONDS; and the int8 model's agreement
with float32 on the 64 inputs (top-1 agreement, worst and mean cosine of the logit rows).
Prints one JSON line per model. For the server's own --precision int8 of VGG16: its
calibration samples (the same random batches the FX model is calibrated on) as
vgg16/1/calibration.npy, skimage's photos preprocessed as torchvision's ImageNet recipe
(photos.npy), and VGG16's float32 outputs on the inputs and photos (vgg16-ref-*.npy).
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
calibration = torch.randn(calib * 8, 3, 224, 224)


def photos():
    """skimage's RGB photos, resized to 256, center-cropped to 224 and normalised."""
    import skimage.data
    from PIL import Image
    from torchvision import transforms
    t = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                            transforms.ToTensor(),
                            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    names = ('astronaut', 'chelsea', 'coffee', 'rocket', 'cat', 'retina', 'hubble_deep_field',
             'immunohistochemistry', 'motorcycle_left', 'colorwheel')
    out = []
    for n in names:
        try:
            a = getattr(skimage.data, n)()
        except Exception:  # noqa: BLE001 -- not every skimage version has every photo
            continue
        if a.ndim == 3 and a.shape[2] >= 3:
            out.append(t(Image.fromarray(a[..., :3])))
    return torch.stack(out)


photo_batch = photos()
np.save(os.path.join(out, 'photos.npy'), photo_batch.numpy())


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
        np.save(os.path.join(version(arch), 'calibration.npy'), calibration.numpy())
        with torch.no_grad():
            for name, batch in (('inputs', inputs), ('photos', photo_batch)):
                np.save(os.path.join(out, f'vgg16-ref-{name}.npy'),
                        torch.cat([model(batch[i:i + 8]) for i in range(0, len(batch), 8)]).numpy())
    else:
        torch.jit.script(model).save(os.path.join(version(arch), 'model.pt'))
    x = inputs[:8]
    prepared = prepare_fx(model, get_default_qconfig_mapping(engine), example_inputs=(x,))
    with torch.no_grad():
        for i in range(calib):
            prepared(calibration[i * 8:(i + 1) * 8])
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
