#!/usr/bin/env python3
"""--precision int8: float checkpoints quantized at load from the version's calibration samples.

A native VGG (state dict + architecture, batch norm folded) and a pickled layer stack
(torch.save of an nn.Sequential: Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, Flatten,
Linear) with random weights are uploaded with precision "int8" and a float32 .npy of 32
calibration samples (model-client upload --calibration; the Python client's
calibration=), or with the samples copied into the version directory by hand. Each must:

- serve what PyTorch's own static quantization makes of the same float model with the same
  observers (FX prepare_fx / convert_fx on this platform's torch: MinMaxObserver quint8
  activations, PerChannelMinMaxObserver symmetric qint8 weights, calibrated on the same
  samples): within one output quantization step (the output's scale), printed with the
  largest difference;
- report precision "int8" in its ModelStatus with the calibration sample count, and the top-1
  agreement and worst cosine against the float model that this test recomputes from the
  served int8 outputs and Python's float outputs on the samples.

On torch 2.x (the Debian 13 run), an exported program of such a chain (torch.export.export,
and the same in core ATen after run_decompositions) is held to the same comparison; one with
a residual connection is refused naming the node.

A native VGG calibrated on images in its calibration/ folder (run through the version's
preprocess) serves close to its float model with the image count in its status.

Refused with FAILED_PRECONDITION and nothing served in int8: an int8 version without samples
(the message says how to add them), one below --min_int8_agreement (a classifier whose classes
differ by less than int8 resolves: the message gives the numbers), a TorchScript version
(which its maker quantizes), and a calibration file of the wrong shape; an upload whose
calibration file is not a float32 .npy is INVALID_ARGUMENT. SaveModel of an int8 version
writes its float weights with its samples beside them. The server keeps serving throughout.
Usage: int8_test.py SERVER_BIN CLIENT_BIN SOURCE_DIR PYCLIENT_DIR TMP
"""
import copy
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import torch
from PIL import Image
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import (MinMaxObserver, PerChannelMinMaxObserver, QConfig,
                                   QConfigMapping)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

server_bin, client_bin, source_dir, pyclient_dir, tmp_root = sys.argv[1:6]
sys.path.insert(0, os.path.join(source_dir, 'tests', 'testing'))
sys.path.insert(0, pyclient_dir)
import make_fixtures  # noqa: E402  (its tiny VGG; importing it writes nothing)
from checks import code_of, expect, make_work, start_server, stop, summary  # noqa: E402
from modelserver_client import ModelServerClient as Client  # noqa: E402
from modelserver_client.client import pb  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(2)
token = 'int8-test-token'
work = make_work(tmp_root, 'int8-', token)
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
ENGINE = 'onednn' if 'onednn' in torch.backends.quantized.supported_engines else 'x86'
torch.backends.quantized.engine = ENGINE
ARCH = 'vgg:cfg=8-M-16-M:bn:classes=10:hidden=32:pool=2'
SAMPLES = 32


def tiny_vgg():
    """torchvision's VGG with ARCH's configuration, non-trivial batch-norm statistics."""
    m = make_fixtures.tiny_vgg([8, 'M', 16, 'M'], True, 10, 32, 2)
    make_fixtures.randomize_bn(m)
    return m.eval()


def layer_stack():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, stride=1, padding=1, groups=2), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(12 * 8 * 8, 24), nn.ReLU(), nn.Linear(24, 10)).eval()


class Chain(nn.Module):
    """A chain of layers in functional spelling, for torch.export."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(16 * 2 * 2, 32)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.c1(x))), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.c2(x)), 2)
        return self.fc2(self.drop(F.relu(self.fc1(torch.flatten(x, 1)))))


class Residual(nn.Module):
    """Not a chain: x + conv(x)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc((x + F.relu(self.c(x))).mean((2, 3)))


def fx_int8(model, samples):
    """PyTorch's static quantization of `model` with the observers the server uses."""
    qconfig = QConfig(
        activation=MinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                            reduce_range=False),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                  qscheme=torch.per_channel_symmetric))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        prepared = prepare_fx(copy.deepcopy(model), QConfigMapping().set_global(qconfig),
                              example_inputs=(samples[:1],))
        with torch.no_grad():
            for b in range(0, len(samples), 8):
                prepared(samples[b:b + 8])
        return convert_fx(prepared)


def output_scale(q):
    """The scale of the quantized model's last quantized output."""
    scales = [v for k, v in q.state_dict().items() if k.endswith('scale') and v.numel() == 1]
    return float(scales[-1]) if scales else 0.0


def agreement(int8, float_out):
    a = int8.reshape(len(int8), -1).astype(np.float64)
    f = float_out.reshape(len(float_out), -1).astype(np.float64)
    top1 = float(np.mean(a.argmax(1) == f.argmax(1)))
    cos = (a * f).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(f, axis=1))
    return top1, float(cos.min())


def npy(name, array):
    path = os.path.join(work, name)
    np.save(path, array)
    return path


def upload_vgg(name, weights, calibration):
    """Uploads work/`weights` as `name`: a state dict of ARCH in int8 with `calibration`."""
    return c.upload(name, os.path.join(work, weights), format='state_dict', architecture=ARCH,
                    precision='int8', calibration=calibration)


def expect_refused(what, name, want_code, *fragments):
    code, msg = code_of(lambda: c.load(name))
    expect(what, code == want_code and all(f in msg for f in fragments), f'{code} {msg}')
    st = c.status(name)
    expect(f'  and {name} serves nothing in int8',
           st.serving_version == 0 and st.precision != 'int8', f'{st}')


store = os.path.join(work, 'store')
os.makedirs(store)
# A bar of 0.9, not the default 0.99: with random weights the layer stack's logits have near
# ties (31 of its 32 samples agree).
proc, port, _, log_path = start_server(server_bin, work, store, 'int8',
                                       extra=['--quantized_engine', ENGINE,
                                              '--min_int8_agreement', '0.9'], env=env)
if port is None:
    expect('the server starts', False, open(log_path).read()[-2000:])
    summary(work)
c = Client(f'127.0.0.1:{port}', admin_token=token, timeout=300)

try:
    gen = torch.Generator().manual_seed(3)
    calib = torch.randn(SAMPLES, 3, 32, 32, generator=gen)
    calib_path = npy('calibration.npy', calib.numpy())
    x = torch.randn(5, 3, 32, 32, generator=gen)

    cases = []
    vgg = tiny_vgg()
    torch.save(vgg.state_dict(), os.path.join(work, 'model_weights.pth'))
    up = subprocess.run([client_bin, '--target', f'127.0.0.1:{port}', '--token', token,
                         'upload', 'vgg-int8', '--file', os.path.join(work, 'model_weights.pth'),
                         '--architecture', ARCH, '--precision', 'int8', '--calibration',
                         calib_path], capture_output=True, text=True)
    expect('a native VGG uploads through model-client upload --precision int8 --calibration',
           up.returncode == 0, up.stdout + up.stderr)
    cases.append(('vgg-int8', 'a native VGG (batch norm folded)', vgg))

    stack = layer_stack()
    with torch.no_grad():  # non-trivial batch-norm statistics
        stack[1].running_mean.uniform_(-0.2, 0.2)
        stack[1].running_var.uniform_(0.5, 1.5)
    torch.save(stack, os.path.join(work, 'model.pth'))
    d = os.path.join(store, 'stack-int8', '1')
    os.makedirs(d)
    shutil.copy(os.path.join(work, 'model.pth'), d)
    shutil.copy(calib_path, os.path.join(d, 'calibration.npy'))
    with open(os.path.join(d, 'manifest.json'), 'w') as f:
        f.write('{"file": "model.pth", "format": "PICKLED_MODULE", "precision": "int8"}')
    cases.append(('stack-int8', 'a pickled layer stack (samples copied by hand)', stack))

    if hasattr(torch, 'export'):
        chain = Chain().eval()
        with torch.no_grad():
            chain.bn.running_mean.uniform_(-0.2, 0.2)
            chain.bn.running_var.uniform_(0.5, 1.5)
        batch = torch.export.Dim('batch', min=1, max=64)
        ep = torch.export.export(chain, (calib[:2],), dynamic_shapes=({0: batch},))
        for name, program in (('export-int8', ep), ('export-core-int8', ep.run_decompositions())):
            d = os.path.join(store, name, '1')
            os.makedirs(d)
            torch.export.save(program, os.path.join(d, 'model.pt2'))
            shutil.copy(calib_path, os.path.join(d, 'calibration.npy'))
            with open(os.path.join(d, 'manifest.json'), 'w') as f:
                f.write('{"file": "model.pt2", "format": "EXPORTED_PROGRAM", "precision": "int8"}')
            targets = sorted({str(n.target) for n in program.graph.nodes
                              if n.op == 'call_function'})
            print(f'     {name}: {", ".join(targets)}', flush=True)
        cases.append(('export-int8', 'an exported program (torch.export.export)', chain))
        cases.append(('export-core-int8', 'an exported program in core ATen '
                      '(run_decompositions: convolution, addmm)', chain))
    else:
        print(f'skip exported programs in int8: this torch ({torch.__version__}) has no '
              'torch.export (the Debian 13 run exports them)', flush=True)

    for name, what, model in cases:
        code, msg = code_of(lambda: c.load(name))
        expect(f'{what} loads in int8', code == 'OK', msg)
        if code != 'OK':
            continue
        q = fx_int8(model, calib)
        with torch.no_grad():
            want = q(x).numpy()
            float_calib = model(calib).numpy()
        got = c.predict(name, x.numpy()).output
        step = output_scale(q)
        diff = float(np.abs(got - want).max())
        expect(f'{what} serves PyTorch\'s own int8 (FX, same observers) within one output '
               f'step {step:.5f}', step > 0 and diff <= step * 1.001,
               f'largest difference {diff:.6f}')
        print(f'     {name}: largest difference from FX int8 {diff:.6f} '
              f'({diff / step if step else 0:.2f} output steps)', flush=True)
        served_calib = np.concatenate([c.predict(name, calib[b:b + 8].numpy()).output
                                       for b in range(0, SAMPLES, 8)])
        top1, cos = agreement(served_calib, float_calib)
        st = c.status(name)
        expect(f'{what}: its status says int8 with {SAMPLES} calibration samples',
               st.precision == 'int8' and st.int8_calibration_samples == SAMPLES, f'{st}')
        expect(f'{what}: its status\'s top-1 agreement {st.int8_top1_agreement:.4f} and worst '
               f'cosine {st.int8_worst_cosine:.6f} are what the served outputs give '
               f'({top1:.4f}, {cos:.6f})',
               abs(st.int8_top1_agreement - top1) <= 1.0 / SAMPLES + 1e-9
               and abs(st.int8_worst_cosine - cos) < 1e-3 and st.int8_worst_cosine > 0.9,
               f'{st}')
    # Calibration images in calibration/, run through the version's preprocess.
    d = os.path.join(store, 'vgg-images', '1')
    os.makedirs(os.path.join(d, 'calibration'))
    shutil.copy(os.path.join(work, 'model_weights.pth'), d)
    rng = np.random.default_rng(5)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            os.path.join(d, 'calibration', f'{i}.png'))
    with open(os.path.join(d, 'manifest.json'), 'w') as f:
        f.write('{"file": "model_weights.pth", "format": "STATE_DICT", "architecture": "'
                + ARCH + '", "precision": "int8", "preprocess": {"resize": 32, "crop": 32}}')
    code, msg = code_of(lambda: c.load('vgg-images'))
    st = c.status('vgg-images')
    expect('calibration images in calibration/ (6 PNGs through the version\'s preprocess) make '
           'an int8 version', code == 'OK' and st.precision == 'int8'
           and st.int8_calibration_samples == 6 and st.int8_worst_cosine > 0.9,
           f'{code} {msg} {st}')
    if code == 'OK':
        got = c.predict('vgg-images', x.numpy()).output
        with torch.no_grad():
            want = vgg(x).numpy()
        cos = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
        expect('  and serves close to the float model', cos > 0.98, f'cosine {cos:.5f}')

    log = open(log_path).read()
    expect('the log gives the numbers', "model 'vgg-int8' version 1 quantized to int8" in log
           and 'top-1 agreement' in log, log[-1500:])

    # SaveModel of an int8 version: its float weights, its samples beside them.
    req = pb.SaveModelRequest(model_name='vgg-int8', format=pb.STATE_DICT)
    code, msg = code_of(lambda: c._call(c._stub.SaveModel, req, admin=True))
    saved = os.path.join(store, 'vgg-int8', '2')
    ok = code == 'OK' and os.path.exists(os.path.join(saved, 'calibration.npy'))
    if ok:
        sd = torch.load(os.path.join(saved, 'model_weights.pth'))
        ok = all(torch.equal(sd[k], v) for k, v in vgg.state_dict().items())
    expect('SaveModel of the int8 version writes its float weights and its samples', ok,
           f'{code} {msg}')

    # Without samples: refused, saying how to add them.
    code, msg = code_of(lambda: upload_vgg('vgg-nosamples', 'model_weights.pth', None))
    expect_refused('an int8 version without calibration samples is FAILED_PRECONDITION saying '
                   'how to add them', 'vgg-nosamples', 'FAILED_PRECONDITION',
                   'no calibration samples', 'upload --calibration', 'calibration.npy')

    # Below --min_int8_agreement: the classes differ by less than int8 resolves.
    tied = tiny_vgg()
    with torch.no_grad():
        last = tied.classifier[6]
        last.weight.copy_(last.weight[0:1].expand_as(last.weight)
                          + 1e-6 * torch.randn(last.weight.shape, generator=gen))
        last.bias.zero_()
    torch.save(tied.state_dict(), os.path.join(work, 'tied_weights.pth'))
    code, msg = code_of(lambda: upload_vgg('vgg-tied', 'tied_weights.pth', calib_path))
    expect_refused('an int8 version below --min_int8_agreement is FAILED_PRECONDITION with the '
                   'numbers', 'vgg-tied', 'FAILED_PRECONDITION', 'top-1 agreement',
                   'worst cosine', 'below --min_int8_agreement 0.9')

    # A TorchScript version: int8 is its maker's.
    torch.jit.script(tiny_vgg()).save(os.path.join(work, 'model.pt'))
    code, msg = code_of(lambda: c.upload('ts-int8', os.path.join(work, 'model.pt'),
                                         precision='int8', calibration=calib_path))
    expect_refused('a TorchScript version in int8 is FAILED_PRECONDITION naming what int8 '
                   'quantizes', 'ts-int8', 'FAILED_PRECONDITION', 'quantizes native VGGs')

    # An exported program that is not a chain of layers.
    if hasattr(torch, 'export'):
        d = os.path.join(store, 'export-residual', '1')
        os.makedirs(d)
        torch.export.save(torch.export.export(Residual().eval(), (calib[:2],)),
                          os.path.join(d, 'model.pt2'))
        shutil.copy(calib_path, os.path.join(d, 'calibration.npy'))
        with open(os.path.join(d, 'manifest.json'), 'w') as f:
            f.write('{"file": "model.pt2", "format": "EXPORTED_PROGRAM", "precision": "int8"}')
        expect_refused('an exported program with a residual connection in int8 is '
                       'FAILED_PRECONDITION naming the node', 'export-residual',
                       'FAILED_PRECONDITION', 'residual connection', 'aten.add')

    # Samples the model does not take.
    wrong = npy('wrong.npy', np.zeros((4, 5, 32, 32), np.float32))
    code, msg = code_of(lambda: upload_vgg('vgg-badshape', 'model_weights.pth', wrong))
    expect_refused('calibration samples of the wrong shape are FAILED_PRECONDITION naming it',
                   'vgg-badshape', 'FAILED_PRECONDITION', '[4,5,32,32]')

    # An upload whose calibration file is not a float32 .npy.
    with open(os.path.join(work, 'junk.npy'), 'wb') as f:
        f.write(b'not numpy at all')
    for label, path in (('not a .npy file', os.path.join(work, 'junk.npy')),
                        ('int64', npy('ints.npy', np.zeros((4, 3, 32, 32), np.int64)))):
        code, msg = code_of(lambda: upload_vgg('vgg-junk', 'model_weights.pth', path))
        expect(f'an upload whose calibration file is {label} is INVALID_ARGUMENT',
               code == 'INVALID_ARGUMENT' and 'calibration samples' in msg, f'{code} {msg}')
    expect('  and publishes nothing', not os.path.exists(os.path.join(store, 'vgg-junk')))

    code, msg = code_of(lambda: c.predict('vgg-int8', x.numpy()))
    expect('the server still serves', code == 'OK' and proc.poll() is None, msg)
finally:
    stop(proc)
summary(work)
