#!/usr/bin/env python3
"""torchvision's classification models as users save them, served by the real server.

For the smallest variant of each family this platform's torchvision has (random weights,
eval mode), written here by Python's torch one model at a time (together they are ~1.7 GB
a copy): the scripted module, the traced module, and its state dict in an architecture
template (the model scripted again with other random weights, so that serving the
template's own weights would show). Each is loaded into one server with the defaults (a
sandboxed model-worker per version, the operator allowlist on), asked for a batch of 2,
and compared with Python's `model.eval()(x)`: within 1e-5 of the largest |output|.

Also the patterns of real torch 2.x files: a Sequential subclass whose forward warns (a
torch 2.1 file did; served, and the warning logged once however often it is asked), and
modules with several outputs (a named tuple with a None, a dict, a tuple of a dict of lists):
each tensor is an output of its own, named by position ("output1") or key ("scores",
"output1.a.0"), through Predict (the first unless the request names others, or all), the
Open Inference Protocol over gRPC (built from its field numbers) and REST, and
ModelMetadata. (Scripted GoogLeNet and Inception v3 return named tuples too: in eval their
aux outputs are None, so they give one, "output0".)
A TorchScript file whose format version record is past what any LibTorch reads (as a
newer torch would write it) is refused, naming the file's version and the server's LibTorch.

Under a sanitizer only a few models run (every one goes through the same server code;
the time is LibTorch's, which is not instrumented), and it says so; unless
MODELSERVER_ZOO=all (`scripts/debian13.sh --asan`, CI's Debian 13 run, sets it): then
every model runs scripted and in its template, and the traced file of those few (a traced
file is the scripted model's operators without its control flow; the plain build traces
every model), to keep CI within its hour.
Usage: zoo_test.py SERVER_BIN SOURCE_DIR PYCLIENT_DIR TMP
"""
import collections
import json
import os
import re
import shutil
import sys
import time
import urllib.request
import warnings
import zipfile
from typing import Dict, List, NamedTuple, Optional, Tuple

import grpc
import numpy as np
import torch
import torchvision

server_bin, source_dir, pyclient_dir, tmp_root = sys.argv[1:5]
sys.path.insert(0, os.path.join(source_dir, 'tests', 'testing'))
sys.path.insert(0, pyclient_dir)
from checks import (SANITIZED, close_to, code_of, expect, make_work, start_server,  # noqa: E402
                    stop, summary)
from modelserver_client import ModelServerClient as Client  # noqa: E402
from oip_messages import M, call  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(2)
token = 'zoo-test-token'
work = make_work(tmp_root, 'zoo-', token)
store = os.path.join(work, 'store')
os.makedirs(store)
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}

# name -> (constructor keywords, input side). The smallest input each accepts; ViT and
# MaxViT are built for 224.
ZOO = collections.OrderedDict([
    ('alexnet', ({}, 64)), ('resnet18', ({}, 32)), ('resnext50_32x4d', ({}, 32)),
    ('wide_resnet50_2', ({}, 32)), ('squeezenet1_1', ({}, 64)), ('densenet121', ({}, 32)),
    ('googlenet', ({'aux_logits': True, 'init_weights': True}, 64)),
    ('inception_v3', ({'aux_logits': True, 'init_weights': True}, 75)),
    ('mobilenet_v2', ({}, 32)), ('mobilenet_v3_small', ({}, 32)),
    ('shufflenet_v2_x0_5', ({}, 32)), ('mnasnet0_5', ({}, 32)), ('efficientnet_b0', ({}, 32)),
    ('efficientnet_v2_s', ({}, 32)), ('regnet_y_400mf', ({}, 32)), ('convnext_tiny', ({}, 32)),
    ('swin_t', ({}, 32)), ('vit_b_16', ({}, 224)), ('maxvit_t', ({}, 224)),
])
UNDER_SANITIZER = ('resnet18', 'googlenet', 'swin_t', 'efficientnet_b0')


class WarnSeq(torch.nn.Sequential):
    """The torch 2.1 file's pattern: a Sequential whose forward warns."""

    def forward(self, x):
        warnings.warn('WarnSeq is deprecated, use Net2')
        for m in self:
            x = m(x)
        return x


class Outputs(NamedTuple):
    aux: Optional[torch.Tensor]
    logits: torch.Tensor
    features: torch.Tensor


class TupleOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x) -> Outputs:
        f = x.flatten(1)
        return Outputs(None, self.fc(f), f)


class DictOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(12, 3)

    def forward(self, x) -> Dict[str, torch.Tensor]:
        f = x.flatten(1)
        return {'scores': self.fc(f).softmax(1), 'features': f}


class Nested(torch.nn.Module):
    """A tuple holding a dict holding a list with a None: names by path."""

    def forward(self, x) -> Tuple[torch.Tensor, Dict[str, List[Optional[torch.Tensor]]]]:
        f = x.flatten(1)
        a: List[Optional[torch.Tensor]] = [f + 1]
        b: List[Optional[torch.Tensor]] = [None, f.sum(1, keepdim=True)]
        out: Dict[str, List[Optional[torch.Tensor]]] = {'a': a, 'b': b}
        return f * 2, out


class TooMany(torch.nn.Module):
    """33 tensors: more outputs than a model may give."""

    def forward(self, x) -> List[torch.Tensor]:
        return [x * float(i) for i in range(33)]


class Clash(torch.nn.Module):
    """Two outputs of one name, "a.b.c": key "b.c" under "a", and key "c" under "a.b"."""

    def forward(self, x) -> Dict[str, Dict[str, torch.Tensor]]:
        return {'a': {'b.c': x}, 'a.b': {'c': x + 1}}


class NoTensor(torch.nn.Module):
    def forward(self, x) -> Tuple[Optional[torch.Tensor], int]:
        return None, x.dim()


def start():
    """The server, its gRPC and REST ports, and a client."""
    proc, port, http, _ = start_server(server_bin, work, store, 'zoo', http=True, env=env)
    return proc, port, http, Client(f'127.0.0.1:{port}', admin_token=token, timeout=300)


def version_dir(model):
    d = os.path.join(store, model, '1')
    os.makedirs(d)
    return d


def serve_and_compare(c, model, x, want, what):
    """Loads `model` from the store, predicts `x`, compares; unloads and removes it."""
    code, msg = code_of(lambda: c.load(model))
    got = []
    if code == 'OK':
        code, msg = code_of(lambda: got.append(c.predict(model, x).output))
    out = got[0] if got else None
    if out is None:
        expect(f'{what} serves', False, f'{code}: {msg}')
    else:
        ok, detail = close_to(out, want)
        expect(f'{what} serves Python\'s outputs', ok, detail)
    code_of(lambda: c.unload(model))
    shutil.rmtree(os.path.join(store, model), ignore_errors=True)


def oip_infer(ch, model, x, outputs=()):
    r = M['ModelInferRequest'](model_name=model)
    r.inputs.add(name='input', datatype='FP32', shape=list(x.shape))
    r.raw_input_contents.append(x.tobytes())
    for name in outputs:
        r.outputs.add(name=name)
    got = call(ch, 'ModelInfer', r, 'ModelInferResponse')
    return {o.name: np.frombuffer(got.raw_output_contents[i], np.float32).reshape(list(o.shape))
            for i, o in enumerate(got.outputs)}


def rest_infer(model, x, outputs=()):
    body = {'inputs': [{'name': 'input', 'datatype': 'FP32', 'shape': list(x.shape),
                        'data': x.ravel().tolist()}]}
    if outputs:
        body['outputs'] = [{'name': n} for n in outputs]
    req = urllib.request.Request(f'http://127.0.0.1:{http_port}/v2/models/{model}/infer',
                                 data=json.dumps(body).encode(), method='POST',
                                 headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=120) as res:
        out = json.load(res)
    return {o['name']: np.array(o['data'], np.float32).reshape(o['shape'])
            for o in out['outputs']}


def same_outputs(got, want):
    """got, want: name -> array; the same names in the same order, each within 1e-5."""
    if list(got) != list(want):
        return False, f'outputs {list(got)}, expected {list(want)}'
    for name in want:
        ok, detail = close_to(got[name], want[name])
        if not ok:
            return False, f'{name}: {detail}'
    return True, ', '.join(f'{n} {list(want[n].shape)}' for n in want)


def several_outputs(x):
    """Modules with several outputs: each tensor an output of its own, by position or key."""
    tup, dic, nest = TupleOut().eval(), DictOut().eval(), Nested().eval()
    for name, m in (('tuple', tup), ('dict', dic), ('nested', nest)):
        torch.jit.script(m).save(os.path.join(version_dir(name), 'model.pt'))
    with torch.no_grad():
        t, d, n = tup(x), dic(x), nest(x)
    want = {
        'tuple': {'output1': t.logits.numpy(), 'output2': t.features.numpy()},
        'dict': {'scores': d['scores'].numpy(), 'features': d['features'].numpy()},
        'nested': {'output0': n[0].numpy(), 'output1.a.0': n[1]['a'][0].numpy(),
                   'output1.b.1': n[1]['b'][1].numpy()},
    }
    xs = x.numpy()
    ch = grpc.insecure_channel(f'127.0.0.1:{grpc_port}')
    for model, outs in want.items():
        code, msg = code_of(lambda: c.load(model))
        expect(f'{model}: loads', code == 'OK', f'{code} {msg}')
        names = list(outs)
        first = names[0]
        p = c.predict(model, xs)
        ok, detail = same_outputs(p.outputs, {first: outs[first]})
        expect(f'{model}: Predict returns the first output, {first}, by name',
               ok and p.output_name == first, f'{p.output_name}: {detail}')
        p = c.predict(model, xs, all_outputs=True)
        ok, detail = same_outputs(p.outputs, outs)
        expect(f'{model}: Predict all_outputs returns each tensor by name = Python', ok, detail)
        last = names[-1]
        p = c.predict(model, xs, outputs=[last])
        ok, detail = same_outputs(p.outputs, {last: outs[last]})
        expect(f'{model}: Predict naming {last} returns it', ok and p.output_name == last, detail)
        if model == 'tuple':
            for bad, want_msg in ((dict(outputs=['output1', 'output1']), "names output 'output1' twice"),
                                  (dict(outputs=['']), 'output names are 1 to 127 bytes'),
                                  (dict(outputs=['x' * 128]), 'output names are 1 to 127 bytes'),
                                  (dict(outputs=['output1'], all_outputs=True),
                                   'both all_outputs and output_names')):
                code, msg = code_of(lambda: c.predict(model, xs, **bad))
                expect(f'tuple: a request with {str(bad)[:60]} is INVALID_ARGUMENT saying why',
                       code == 'INVALID_ARGUMENT' and want_msg in msg, f'{code} {msg}')
        code, msg = code_of(lambda: c.predict(model, xs, outputs=['nope']))
        expect(f'{model}: an output it does not give is INVALID_ARGUMENT naming those it gives',
               code == 'INVALID_ARGUMENT' and all(f"'{n}'" in msg for n in names), f'{code} {msg}')
        ok, detail = same_outputs(oip_infer(ch, model, xs), outs)
        expect(f'{model}: Open Inference ModelInfer gives every output by name = Python', ok,
               detail)
        picked = list(reversed(names))
        ok, detail = same_outputs(oip_infer(ch, model, xs, picked),
                                  {n: outs[n] for n in picked})
        expect(f'{model}: ModelInfer asking for {picked} gives those, in that order', ok, detail)
        ok, detail = same_outputs(rest_infer(model, xs), outs)
        expect(f'{model}: REST /v2 infer gives every output by name = Python', ok, detail)
        ok, detail = same_outputs(rest_infer(model, xs, [last]), {last: outs[last]})
        expect(f'{model}: REST /v2 infer asking for {last} gives it', ok, detail)
        if model == 'tuple':
            # Triton's classification extension on the first requested output only.
            r = M['ModelInferRequest'](model_name=model)
            r.inputs.add(name='input', datatype='FP32', shape=list(xs.shape))
            r.raw_input_contents.append(xs.tobytes())
            r.outputs.add(name='output2')
            r.outputs.add(name='output1').parameters['classification'].int64_param = 2
            code, msg = code_of(lambda: call(ch, 'ModelInfer', r, 'ModelInferResponse'))
            expect('tuple: classification on a later requested output is INVALID_ARGUMENT',
                   code == 'INVALID_ARGUMENT' and 'first requested output' in msg,
                   f'{code} {msg}')
            del r.outputs[:]
            r.outputs.add(name='output1').parameters['classification'].int64_param = 2
            r.outputs.add(name='output2')
            got = call(ch, 'ModelInfer', r, 'ModelInferResponse')
            # raw BYTES: per element a 4-byte length, then "<score>:<index>".
            raw, at, entries = got.raw_output_contents[0], 0, []
            while at + 4 <= len(raw):
                n = int.from_bytes(raw[at:at + 4], 'little')
                entries.append(raw[at + 4:at + 4 + n].decode())
                at += 4 + n
            top = [int(e.split(':')[1]) for e in entries[::2]]
            want_top = np.argsort(-outs['output1'], axis=1)[:, 0].tolist()
            expect('tuple: classification of output1 ranks its classes, output2 rides along',
                   [o.name for o in got.outputs] == ['output1', 'output2'] and
                   got.outputs[0].datatype == 'BYTES' and top == want_top,
                   f'{[o.name for o in got.outputs]} {entries} vs best {want_top}')
        md = call(ch, 'ModelMetadata', M['ModelMetadataRequest'](name=model),
                  'ModelMetadataResponse')
        expect(f'{model}: ModelMetadata lists its outputs', [o.name for o in md.outputs] == names,
               str([o.name for o in md.outputs]))
        code_of(lambda: c.unload(model))
    ch.close()
    for name, m, want_msg in (('too_many', TooMany(), 'at most 32 outputs are served'),
                              ('clash', Clash(), 'two outputs named "a.b.c"')):
        torch.jit.script(m).save(os.path.join(version_dir(name), 'model.pt'))
        code, msg = code_of(lambda: c.load(name))
        if code == 'OK':
            code, msg = code_of(lambda: c.predict(name, xs))
        expect(f'a module with {name.replace("_", " ")} outputs is FAILED_PRECONDITION saying why',
               code == 'FAILED_PRECONDITION' and want_msg in msg, f'{code} {msg}')
        code_of(lambda: c.unload(name))


def log_text():
    with open(os.path.join(work, 'server-zoo.log')) as f:
        return f.read()


proc, grpc_port, http_port, c = start()
names = list(ZOO)
if SANITIZED and os.environ.get('MODELSERVER_ZOO') != 'all':
    print(f'note: under {SANITIZED} only {", ".join(UNDER_SANITIZER)} run (the server code is '
          'the same for every model; the rest is uninstrumented LibTorch time)', flush=True)
    names = [n for n in names if n in UNDER_SANITIZER]
elif SANITIZED:
    print(f'note: under {SANITIZED} the traced files of {", ".join(UNDER_SANITIZER)} only '
          '(every model scripted and in its template)', flush=True)
try:
    for name in names:
        kwargs, side = ZOO[name]
        t0 = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
            other = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
            x = torch.randn(2, 3, side, side)
            with torch.no_grad():
                want = model(x)
            if isinstance(want, tuple):  # GoogLeNet's / Inception's outputs in eval: logits
                want = want[0]
            want = want.numpy()
            kinds = ('script', 'trace', 'template')
            if SANITIZED and name not in UNDER_SANITIZER:
                kinds = ('script', 'template')
            scripted = torch.jit.script(model)
            traced = torch.jit.trace(model, x, check_trace=False) if 'trace' in kinds else None
        scripted.save(os.path.join(version_dir(name + '-script'), 'model.pt'))
        if traced is not None:
            traced.save(os.path.join(version_dir(name + '-trace'), 'model.pt'))
        d = version_dir(name + '-template')
        torch.save(model.state_dict(), os.path.join(d, 'model_weights.pth'))
        torch.jit.script(other).save(os.path.join(d, 'architecture.pt'))
        del model, other, scripted, traced
        xs = x.numpy()
        for kind in kinds:
            serve_and_compare(c, f'{name}-{kind}', xs, want, f'{name} ({kind})')
        print(f'     {name}: {time.monotonic() - t0:.1f} s', flush=True)

    # The patterns of real torch 2.x files.
    torch.manual_seed(1)
    seq = WarnSeq(torch.nn.Flatten(), torch.nn.Linear(12, 4)).eval()
    x = torch.randn(3, 3, 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.jit.script(seq).save(os.path.join(version_dir('warns'), 'model.pt'))
        want = seq(x).detach().numpy()
    code, msg = code_of(lambda: c.load('warns'))
    expect('a Sequential whose forward warns loads', code == 'OK', f'{code} {msg}')
    outs = [c.predict('warns', x.numpy()).output for _ in range(5)] if code == 'OK' else []
    expect('and serves Python\'s outputs',
           len(outs) == 5 and all(close_to(o, want)[0] for o in outs),
           close_to(outs[0], want)[1] if outs else 'not served')
    said = log_text().count('WarnSeq is deprecated, use Net2')
    expect('its warning is in the log once for 5 requests', said == 1, f'{said} times')

    several_outputs(x)
    # A TorchScript file from a newer torch: its format version record past what any
    # LibTorch reads today (both platforms read versions up to 10).
    torch.jit.script(seq).save(os.path.join(work, 'newer.pt'))
    with zipfile.ZipFile(os.path.join(work, 'newer.pt')) as src, \
            zipfile.ZipFile(os.path.join(version_dir('newer'), 'model.pt'), 'w') as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, b'1000\n' if info.filename.endswith('/version') else data)
    code, msg = code_of(lambda: c.load('newer'))
    expect('a TorchScript file of format version 1000 is refused naming both versions',
           code == 'FAILED_PRECONDITION' and 'version 1000' in msg and 'newer torch' in msg
           and re.search(r'LibTorch \d+\.\d+', msg) and re.search(r'up to \d+', msg),
           f'{code} {msg}')
    torch.jit.script(NoTensor()).save(os.path.join(version_dir('none'), 'model.pt'))
    code, msg = code_of(lambda: c.load('none'))
    if code == 'OK':
        code, msg = code_of(lambda: c.predict('none', x.numpy()))
    expect('a result holding no tensor (None, int) is an error saying so',
           code != 'OK' and 'holding no tensor' in msg, f'{code} {msg}')
    expect('the server is up', proc.poll() is None)
finally:
    stop(proc)
sys.exit(summary(work))
