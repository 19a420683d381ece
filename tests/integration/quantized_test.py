#!/usr/bin/env python3
"""int8 models as users make them, served by the real server in its sandboxed workers.

torchvision's ResNet-18 and VGG11-BN (random weights, eval mode) quantized by this platform's
torch with FX graph mode (prepare_fx / convert_fx, the engine's default qconfig mapping, four
random calibration batches), saved traced and frozen, and scripted (scripted quantized
modules define __setstate__, which repacks their weights when the file loads). Each is
loaded by a server started with --quantized_engine ENGINE (the engine the model was
quantized for) and must give Python's int8 outputs within 1e-5 of the largest |output|:
VGG11-BN and ResNet-18 on oneDNN, ResNet-18 on QNNPACK (where this torch has them). The
QNNPACK model is also served by the oneDNN server: without a manifest it computes with
oneDNN (the difference printed, not asserted: it depends on the weights); with manifest
"quantized_engine": "qnnpack" its sandboxed worker runs QNNPACK and it gives Python's
outputs (and so does its SaveModel copy, which keeps the field); a manifest naming an engine the build lacks fails the load naming those it has; in
process (--trust_torchscript) a version of another engine is refused, saying how to serve it. An engine this LibTorch
lacks is refused at startup naming the ones it has. Hostile packed-parameter records (the
convolutions' configurations cut short, or garbage) are refused at load by the sandboxed
worker, and the server keeps serving.
Usage: quantized_test.py SERVER_BIN SOURCE_DIR PYCLIENT_DIR TMP
"""
import json
import os
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import torch
import torchvision
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

server_bin, source_dir, pyclient_dir, tmp_root = sys.argv[1:5]
sys.path.insert(0, os.path.join(source_dir, 'tests', 'testing'))
sys.path.insert(0, pyclient_dir)
from checks import (close_to, code_of, expect, make_work, start_server, stop,  # noqa: E402
                    summary)
from modelserver_client import ModelServerClient as Client  # noqa: E402
from modelserver_client.client import pb  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(2)
token = 'quantized-test-token'
work = make_work(tmp_root, 'quantized-', token)
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
ENGINES = [e for e in ('onednn', 'qnnpack') if e in torch.backends.quantized.supported_engines]
print(f'torch {torch.__version__}: quantized engines {torch.backends.quantized.supported_engines}',
      flush=True)


def start(store, engine):
    """A server on `store` with --quantized_engine `engine`: (process, client, log path)."""
    os.makedirs(store, exist_ok=True)
    proc, port, _, log_path = start_server(server_bin, work, store, engine,
                                           extra=['--quantized_engine', engine], env=env)
    if port is None:
        return proc, None, log_path
    return proc, Client(f'127.0.0.1:{port}', admin_token=token, timeout=300), log_path


def quantize(arch, engine, x):
    """The FX-quantized model for `engine` and its int8 outputs on x."""
    torch.backends.quantized.engine = engine
    model = getattr(torchvision.models, arch)(weights=None).eval()
    prepared = prepare_fx(model, get_default_qconfig_mapping(engine), example_inputs=(x,))
    with torch.no_grad():
        for _ in range(4):
            prepared(torch.randn(4, *x.shape[1:]))
        q = convert_fx(prepared)
        return q, q(x).numpy()


def write(store, name, q, x):
    """name-trace (traced and frozen) and name-script versions of q in `store`."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.freeze(torch.jit.trace(q, x).eval())
        scripted = torch.jit.script(q)
    for kind, m in (('trace', traced), ('script', scripted)):
        d = os.path.join(store, f'{name}-{kind}', '1')
        os.makedirs(d)
        m.save(os.path.join(d, 'model.pt'))


def hostile_packed_params(store, c, proc, want):
    """The traced+frozen ResNet-18 with its convolutions' packed-parameter records
    (constants/N of 11 int16: spatial rank, stride, padding, dilation, output padding,
    groups, flags) cut short, overwritten, or with groups that do not divide the channels:
    refused at load by the check before LibTorch restores them (FAILED_PRECONDITION naming
    the defect), the server alive and still serving the good file."""
    good = os.path.join(store, 'resnet18-trace', '1', 'model.pt')

    def groups_of_7(b):
        v = np.frombuffer(b, np.int16).copy()
        v[9] = 7
        return v.tobytes()
    for tag, change, want_msg in (
            ('cut short', lambda b: b[:4], 'the configuration record [11] needs 22 bytes; its '
             'record holds 4'),
            ('garbage', lambda b: np.full(11, -30000, np.int16).tobytes(),
             "the configuration's spatial rank is -30000, not 2"),
            ('groups not dividing', groups_of_7, "the groups (7) do not divide the weight's")):
        name = 'hostile-' + tag.replace(' ', '-')
        d = os.path.join(store, name, '1')
        os.makedirs(d)
        changed = 0
        with zipfile.ZipFile(good) as src, \
                zipfile.ZipFile(os.path.join(d, 'model.pt'), 'w') as dst:
            for info in src.infolist():
                data = src.read(info.filename)
                if '/constants/' in info.filename and info.file_size == 22:
                    data = change(data)
                    changed += 1
                dst.writestr(zipfile.ZipInfo(info.filename), data)
        code, msg = code_of(lambda: c.load(name))
        expect(f'packed-parameter records {tag} ({changed}) are refused at load: '
               f'FAILED_PRECONDITION "{want_msg}"',
               changed > 0 and code == 'FAILED_PRECONDITION' and want_msg in msg and
               'Conv2dPackedParamsBase' in msg, f'{code} {msg}')
    code, msg = code_of(lambda: c.load('resnet18-trace'))
    got = []
    if code == 'OK':
        code, msg = code_of(lambda: got.append(c.predict('resnet18-trace', xs).output))
    expect('the server is alive and still serves the good file',
           proc.poll() is None and bool(got) and close_to(got[0], want)[0], f'{code} {msg}')


def manifest(store, name, engine):
    d = os.path.join(store, name, '1')
    with open(os.path.join(d, 'manifest.json'), 'w') as f:
        json.dump({'format': 'TORCHSCRIPT', 'file': 'model.pt', 'quantized_engine': engine}, f)


def per_version_engine(store, c):
    """On the oneDNN server: a QNNPACK ResNet-18 without a manifest computes with oneDNN
    (the difference printed: it depends on the weights); with manifest
    "quantized_engine": "qnnpack" its worker runs QNNPACK and it gives Python's outputs;
    an engine this LibTorch lacks fails the load naming those it has."""
    q, want = quantize('resnet18', 'qnnpack', x)
    write(store, 'r18-qnnpack', q, x)
    write(store, 'r18-qnnpack-engine', q, x)
    write(store, 'r18-nosuch-engine', q, x)
    code, msg = code_of(lambda: c.load('r18-qnnpack-trace'))
    if code == 'OK':
        out = c.predict('r18-qnnpack-trace', xs).output
        print(f'     a QNNPACK ResNet-18 on the oneDNN server: {close_to(out, want)[1]}', flush=True)
    for kind in ('trace', 'script'):
        manifest(store, f'r18-qnnpack-engine-{kind}', 'qnnpack')
        name = f'r18-qnnpack-engine-{kind}'
        code, msg = code_of(lambda: c.load(name))
        got = []
        if code == 'OK':
            code, msg = code_of(lambda: got.append(c.predict(name, xs).output))
        ok, detail = close_to(got[0], want) if got else (False, f'{code} {msg}')
        expect(f'a QNNPACK ResNet-18 ({kind}) with manifest "quantized_engine": "qnnpack" on the '
               'oneDNN server gives Python\'s QNNPACK outputs', ok, detail)
    # SaveModel keeps the engine with the saved version.
    req = pb.SaveModelRequest(model_name='r18-qnnpack-engine-trace', format=pb.TORCHSCRIPT,
                              target_model_name='r18-qnnpack-saved')
    code, msg = code_of(lambda: c._call(c._stub.SaveModel, req, admin=True))
    got = []
    if code == 'OK':
        code, msg = code_of(lambda: c.load('r18-qnnpack-saved'))
    if code == 'OK':
        code, msg = code_of(lambda: got.append(c.predict('r18-qnnpack-saved', xs).output))
    saved = os.path.join(store, 'r18-qnnpack-saved', '1', 'manifest.json')
    engine = json.load(open(saved)).get('quantized_engine') if os.path.exists(saved) else None
    ok, detail = close_to(got[0], want) if got else (False, f'{code} {msg}')
    expect('SaveModel(TORCHSCRIPT) of it keeps "quantized_engine" and the copy serves the same',
           ok and engine == 'qnnpack', f'{engine}: {detail}')
    # An upload names its engine in the header (model-client --quantized_engine): kept in
    # the manifest, checked and served on it.
    up = os.path.join(store, 'r18-qnnpack-trace', '1', 'model.pt')
    code, msg = code_of(lambda: c.upload('r18-qnnpack-up', up, quantized_engine='QNNPACK'))
    got = []
    if code == 'OK':
        code, msg = code_of(lambda: c.load('r18-qnnpack-up'))
    if code == 'OK':
        code, msg = code_of(lambda: got.append(c.predict('r18-qnnpack-up', xs).output))
    up_manifest = os.path.join(store, 'r18-qnnpack-up', '1', 'manifest.json')
    engine = json.load(open(up_manifest)).get('quantized_engine') \
        if os.path.exists(up_manifest) else None
    ok, detail = close_to(got[0], want) if got else (False, f'{code} {msg}')
    expect('an upload with quantized_engine "QNNPACK" keeps "qnnpack" in its manifest and '
           'serves Python\'s QNNPACK outputs', ok and engine == 'qnnpack', f'{engine}: {detail}')
    code, msg = code_of(lambda: c.upload('r18-qnnpack-up', up, quantized_engine='mkl'))
    expect('an upload naming an engine that does not exist is INVALID_ARGUMENT',
           code == 'INVALID_ARGUMENT' and "'mkl'" in msg, f'{code} {msg}')
    manifest(store, 'r18-nosuch-engine-trace', 'nosuch')
    code, msg = code_of(lambda: c.load('r18-nosuch-engine-trace'))
    expect('a manifest naming an engine this LibTorch lacks fails the load naming those it has',
           code != 'OK' and "quantized engine 'nosuch' is not in this LibTorch" in msg and
           all(e in msg for e in ENGINES), f'{code} {msg}')
    return want


x = torch.randn(2, 3, 64, 64)
xs = x.numpy()
cases = {'onednn': ('resnet18', 'vgg11_bn'), 'qnnpack': ('resnet18',)}
procs = []
try:
    for engine in ENGINES:
        store = os.path.join(work, f'store-{engine}')
        os.makedirs(store)
        wants = {}
        for arch in cases[engine]:
            t0 = time.monotonic()
            q, wants[arch] = quantize(arch, engine, x)
            write(store, arch, q, x)
            print(f'     {arch} quantized for {engine} and saved in {time.monotonic() - t0:.1f} s',
                  flush=True)
            del q
        proc, c, log_path = start(store, engine)
        procs.append(proc)
        if c is None:
            expect(f'the server starts with --quantized_engine {engine}', False,
                   open(log_path).read()[-2000:])
            continue
        startup = open(log_path).read()
        expect(f'its startup line names the engine ({engine})',
               f'quantized engine {engine}' in startup, startup[:400])
        for arch in cases[engine]:
            for kind in ('trace', 'script'):
                model = f'{arch}-{kind}'
                code, msg = code_of(lambda: c.load(model))
                got = []
                if code == 'OK':
                    code, msg = code_of(lambda: got.append(c.predict(model, xs).output))
                what = (f'{arch} int8 for {engine} ({"traced and frozen" if kind == "trace" else "scripted"})')
                if not got:
                    expect(f'{what} serves', False, f'{code}: {msg}')
                else:
                    ok, detail = close_to(got[0], wants[arch])
                    expect(f'{what} serves Python\'s int8 outputs', ok, detail)
                code_of(lambda: c.unload(model))
        if engine == 'onednn':
            hostile_packed_params(store, c, proc, wants['resnet18'])
        if engine == 'onednn' and 'qnnpack' in ENGINES:
            per_version_engine(store, c)
        expect(f'the {engine} server is up', proc.poll() is None)
        stop(proc)

    if 'qnnpack' in ENGINES:
        # In process (--trust_torchscript) every model shares the server's engine: a
        # version quantized for another one is refused, saying how to serve it.
        proc, port, _, log_path = start_server(server_bin, work, os.path.join(work, 'store-onednn'),
                                               'trusted', extra=['--trust_torchscript'], env=env)
        procs.append(proc)
        c = Client(f'127.0.0.1:{port}', admin_token=token, timeout=300)
        code, msg = code_of(lambda: c.load('r18-qnnpack-engine-trace'))
        expect('in process, a version quantized for another engine than the server\'s is '
               'FAILED_PRECONDITION saying how to serve it',
               code == 'FAILED_PRECONDITION' and 'sandboxed worker' in msg and
               '--quantized_engine qnnpack' in msg, f'{code} {msg}')
        stop(proc)

    # An engine this LibTorch lacks: refused at startup, naming those it has.
    proc, c, log_path = start(os.path.join(work, 'store-none'), 'nosuch')
    procs.append(proc)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rc = None
    log = open(log_path).read()
    expect('--quantized_engine nosuch: the server exits 2 naming the engines it has',
           rc == 2 and "quantized engine 'nosuch' is not in this LibTorch" in log and
           all(e in log for e in ENGINES), f'rc {rc}: {log[-600:]}')
finally:
    for p in procs:
        stop(p)
sys.exit(summary(work))
