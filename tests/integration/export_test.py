#!/usr/bin/env python3
"""torch.export programs served by the real server (format EXPORTED_PROGRAM).

The fixtures' export/ folder (tests/testing/export_fixtures.py) holds a small CNN as a
program archive in both layouts, built record by record, with Python's output for a
sample input; and hostile variants of it, one defect each. This test puts them in a
store and checks, through the Python client:

- a hand-copied model.pt2 (torch 2.6's layout and the PT2 archive of torch >= 2.7) and
  an upload (format from the file name) serve Python's output within 1e-5;
- 16 concurrent clients of one sample each get what that sample gets alone (the queue
  merges them; the program was exported for batches in [1, 64]);
- an input outside the program's ranges is INVALID_ARGUMENT naming the dimension;
- SaveModel(STATE_DICT) writes the program's weights as a state dict Python's torch.load
  reads, equal to the program's;
- every hostile program is refused at load with its message, and the server serves on.

With torch.export in this Python (Debian 13's torch 2.6), also torchvision's small
classification models (the zoo test's list) exported with a dynamic batch
(torch.export.Dim) and saved with torch.export.save: each is served within 1e-5 of
Python's `ep.module()(x)` at batches of 2 and 5, or refused naming the operator this
server's LibTorch lacks. The exported files, inputs and outputs are kept in
ZOO_DIR (the 5th argument, when given), so that another build (Debian 12's, whose
Python cannot export) can be checked against them: with ZOO_DIR given and this Python
unable to export, the test serves what is there.

Usage: export_test.py SERVER_BIN SOURCE_DIR PYCLIENT_DIR TMP FIXTURES [ZOO_DIR]
"""
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np

server_bin, source_dir, pyclient_dir, tmp_root, fixtures = sys.argv[1:6]
zoo_dir = sys.argv[6] if len(sys.argv) > 6 else ''
sys.path.insert(0, os.path.join(source_dir, 'tests', 'testing'))
sys.path.insert(0, pyclient_dir)
from checks import close_to, code_of, expect, make_work, start_server, stop, summary  # noqa: E402
from modelserver_client import ModelServerClient as Client  # noqa: E402
from modelserving.v1 import model_service_pb2 as pb  # noqa: E402

token = 'export-test-token'
work = make_work(tmp_root, 'export-', token)
store = os.path.join(work, 'store')
os.makedirs(store)
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
exports = os.path.join(fixtures, 'export')

try:
    import torch
    CAN_EXPORT = hasattr(torch, 'export') and hasattr(torch.export, 'save')
except ImportError:
    torch = None
    CAN_EXPORT = False

# The zoo test's list: the smallest variant of each torchvision family, and the
# smallest input each takes.
ZOO = [('alexnet', {}, 64), ('resnet18', {}, 32), ('resnext50_32x4d', {}, 32),
       ('wide_resnet50_2', {}, 32), ('squeezenet1_1', {}, 64), ('densenet121', {}, 32),
       ('googlenet', {'aux_logits': True, 'init_weights': True}, 64),
       ('inception_v3', {'aux_logits': True, 'init_weights': True}, 75),
       ('mobilenet_v2', {}, 32), ('mobilenet_v3_small', {}, 32), ('shufflenet_v2_x0_5', {}, 32),
       ('mnasnet0_5', {}, 32), ('efficientnet_b0', {}, 32), ('efficientnet_v2_s', {}, 32),
       ('regnet_y_400mf', {}, 32), ('convnext_tiny', {}, 32), ('swin_t', {}, 32),
       ('vit_b_16', {}, 224), ('maxvit_t', {}, 224)]


def put(model, src, version=1, name='model.pt2'):
    d = os.path.join(store, model, str(version))
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(src, os.path.join(d, name))


def served(c, model, x, want, what):
    code, msg = code_of(lambda: c.load(model))
    got = []
    if code == 'OK':
        code, msg = code_of(lambda: got.append(c.predict(model, x).output))
    if not got:
        expect(f'{what} serves', False, f'{code}: {msg}')
        return False
    ok, detail = close_to(got[0], want)
    expect(f'{what} serves Python\'s output', ok, detail)
    return ok


def small_cnn(c):
    for layout in ('handmade_26', 'handmade_pt2'):
        put(layout, os.path.join(exports, layout, 'model.pt2'))
        x = np.load(os.path.join(exports, layout, 'input.npy'))
        want = np.load(os.path.join(exports, layout, 'output.npy'))
        served(c, layout, x, want, f'a hand-copied model.pt2 ({layout})')
    st = c.status('handmade_26')
    expect('its status says EXPORTED_PROGRAM',
           'EXPORTED_PROGRAM' in str(st), str(st)[:300])

    # An upload: the format from the file name (model.pt2).
    up = os.path.join(work, 'model.pt2')
    shutil.copyfile(os.path.join(exports, 'handmade_pt2', 'model.pt2'), up)
    code, msg = code_of(lambda: c.upload('uploaded', up))
    expect('an upload of model.pt2 is accepted', code == 'OK', f'{code} {msg}')
    x = np.load(os.path.join(exports, 'handmade_pt2', 'input.npy'))
    want = np.load(os.path.join(exports, 'handmade_pt2', 'output.npy'))
    served(c, 'uploaded', x, want, 'the uploaded program')
    # A hostile program uploaded is refused before it is published.
    bad = os.path.join(work, 'bad', 'model.pt2')
    os.makedirs(os.path.dirname(bad))
    shutil.copyfile(os.path.join(exports, 'hostile', 'undefined_value.pt2'), bad)
    code, msg = code_of(lambda: c.upload('uploaded', bad))
    expect('an upload of a malformed program is refused, naming the undefined value',
           code == 'FAILED_PRECONDITION' and "'nope'" in msg, f'{code} {msg}')
    # A .pt2 uploaded as a state dict is told apart.
    code, msg = code_of(lambda: c.upload('uploaded', up, format='state_dict'))
    expect('a .pt2 uploaded as STATE_DICT is INVALID_ARGUMENT naming EXPORTED_PROGRAM',
           code == 'INVALID_ARGUMENT' and 'EXPORTED_PROGRAM' in msg, f'{code} {msg}')

    # 16 concurrent clients of one sample: what each sample gets alone.
    alone = [c.predict('handmade_26', x[i:i + 1]).output for i in range(len(x))]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda i: c.predict('handmade_26', x[i % 5:i % 5 + 1]).output,
                             range(16)))
    expect('16 concurrent one-sample requests get their samples\' outputs',
           all(close_to(o, alone[i % 5])[0] for i, o in enumerate(outs)),
           [close_to(o, alone[i % 5])[1] for i, o in enumerate(outs)][:2])
    big = np.concatenate([x] * 30)  # 150 samples, past the range's 64
    got = c.predict('handmade_26', big).output
    expect('a request of 150 samples (the program\'s range is [1, 64]) runs in pieces',
           got.shape == (150, 2) and close_to(got[145:150], np.concatenate(alone))[0],
           str(got.shape))
    code, msg = code_of(lambda: c.predict('handmade_26', np.zeros((2, 3, 9, 8), np.float32)))
    expect('an input outside the exported shape is INVALID_ARGUMENT naming the dimension',
           code == 'INVALID_ARGUMENT' and 'dimension 2 of the input is 9' in msg, f'{code} {msg}')

    # SaveModel(STATE_DICT): the program's weights, as torch.load reads them.
    resp = c._call(c._stub.SaveModel, pb.SaveModelRequest(model_name='handmade_26',
                                                          format=pb.STATE_DICT,
                                                          target_model_name='cnnweights'),
                   admin=True)
    path = os.path.join(store, 'cnnweights', str(resp.version), 'model_weights.pth')
    check = subprocess.run(
        ['/usr/bin/python3', '-c',
         'import json,sys,torch; sd=torch.load(sys.argv[1]); '
         'e=json.load(open(sys.argv[2]))["weights"]; '
         'assert sorted(sd)==sorted(e); '
         'assert all(sd[k].flatten()[:4].tolist()==e[k]["first"] for k in e); print("same")',
         path, os.path.join(exports, 'handmade_26', 'expected.json')],
        capture_output=True, text=True)
    expect('SaveModel(STATE_DICT) writes the program\'s weights (torch.load reads them)',
           check.returncode == 0 and 'same' in check.stdout, check.stdout + check.stderr)

    # The saved state dict serves: SaveModel put the program beside it as its
    # architecture template (architecture.pt2).
    m = json.load(open(os.path.join(store, 'cnnweights', str(resp.version), 'manifest.json')))
    expect('the saved version names architecture.pt2 as its template',
           m.get('architecture_file') == 'architecture.pt2', str(m))
    served(c, 'cnnweights', x, want_26, 'the saved state dict in its program')

    # architecture.pt2 + a state dict of other weights: the state dict's outputs.
    tdir = os.path.join(exports, 'handmade_template')
    tx, twant = np.load(os.path.join(tdir, 'input.npy')), np.load(os.path.join(tdir, 'output.npy'))
    put('templated', os.path.join(tdir, 'model_weights.pth'), name='model_weights.pth')
    put('templated', os.path.join(tdir, 'architecture.pt2'), name='architecture.pt2')
    served(c, 'templated', tx, twant, 'a hand-copied state dict + architecture.pt2')
    code, msg = code_of(lambda: c.upload('templated-up', os.path.join(tdir, 'model_weights.pth'),
                                         architecture_file=os.path.join(tdir, 'architecture.pt2')))
    expect('an upload of a state dict with --architecture_file architecture.pt2 is accepted',
           code == 'OK', f'{code} {msg}')
    if code == 'OK':
        m = json.load(open(os.path.join(store, 'templated-up', '1', 'manifest.json')))
        expect('its manifest names architecture.pt2',
               m.get('architecture_file') == 'architecture.pt2', str(m))
        served(c, 'templated-up', tx, twant, 'the uploaded state dict in its program')
    code, msg = code_of(lambda: c.upload('templated-up', os.path.join(tdir, 'bad_weights.pth'),
                                         format='state_dict',
                                         architecture_file=os.path.join(tdir, 'architecture.pt2')))
    expect('a state dict that does not fit the program is refused at upload, listing the keys',
           code == 'FAILED_PRECONDITION' and '"bn.running_var"' in msg and '"extra.weight"' in msg
           and 'size mismatch for fc.weight' in msg, f'{code} {msg}')

    # Hostile programs: each refused at load naming its defect; the server serves on.
    hostile = {
        'future_schema': ('FAILED_PRECONDITION', 'schema version 9.0'),
        'undefined_value': ('FAILED_PRECONDITION', "uses 'nope'"),
        'use_before_definition': ('FAILED_PRECONDITION', "uses 'conv2d'"),
        'defined_twice': ('FAILED_PRECONDITION', "defines 'conv2d' a second time"),
        'off_allowlist': ('FAILED_PRECONDITION', 'aten::from_file.default is not on the allowlist'),
        'missing_operator': ('FAILED_PRECONDITION', 'has no operator aten::not_an_operator'),
        'writes_weight': ('FAILED_PRECONDITION', 'writes to a weight'),
        'writes_view_of_weight': ('FAILED_PRECONDITION', 'writes to a weight'),
        'writes_number': ('FAILED_PRECONDITION', 'writes to a number of the program'),
        'missing_weight': ('FAILED_PRECONDITION', "'fc.bias' is not in its weights"),
        'wrong_shape': ('FAILED_PRECONDITION', "'fc.weight' is [3, 4] in the weights"),
        'custom_object_constant': ('FAILED_PRECONDITION', 'system'),
        'overflowing_shape': ('FAILED_PRECONDITION', 'overflows'),
        'view_past_storage': ('FAILED_PRECONDITION', 'reaches element 9999'),
        'expanded_view': ('FAILED_PRECONDITION', 'a view of a storage of 2'),
        'huge_graph': ('RESOURCE_EXHAUSTED', 'more than 50000 nodes'),
        # zeros of 2^17 x 2^17 (64 GiB): its warm-up pass meets the forward-pass budget
        'huge_allocation': ('RESOURCE_EXHAUSTED', 'over its budget'),
        # PT2E's operators with arguments torch refuses, at the warm-up pass (the
        # program's own error: INVALID_ARGUMENT, as for any operator's); one the server
        # does not implement, at compilation
        'pt2e_axis_out_of_range': ('INVALID_ARGUMENT', 'axis out of range'),
        'pt2e_bounds_outside_dtype': ('INVALID_ARGUMENT', "outside int8's range [-128, 127]"),
        'pt2e_unimplemented': ('FAILED_PRECONDITION',
                               'has no operator quantized_decomposed::choose_qparams.tensor'),
    }
    for name, (want_code, want_msg) in hostile.items():
        put('h-' + name, os.path.join(exports, 'hostile', name + '.pt2'))
        code, msg = code_of(lambda: c.load('h-' + name))
        expect(f'hostile program {name} is refused: {want_code} "{want_msg}"',
               code == want_code and want_msg in msg, f'{code} {msg}')
    # An AOTInductor package's shape (a fake library) is served as format AOTI_PACKAGE,
    # not read as a program: refused by a LibTorch < 2.6 build, or when its library
    # does not open (aoti_test serves real ones).
    put('h-aoti_like', os.path.join(exports, 'hostile', 'aoti_like.pt2'))
    code, msg = code_of(lambda: c.load('h-aoti_like'))
    expect('a hand-copied AOTInductor package is taken as one (UNIMPLEMENTED before LibTorch '
           '2.6, its fake library refused after)',
           (code == 'UNIMPLEMENTED' and 'AOTInductor packages' in msg) or
           (code == 'FAILED_PRECONDITION' and "package's library" in msg), f'{code} {msg}')
    got = c.predict('handmade_26', x).output
    expect('after them the server still serves', close_to(got, want_26)[0])


def export_zoo(out_dir):
    """torch.export.save of each zoo model with a dynamic batch, its input and output."""
    import torchvision
    os.makedirs(out_dir, exist_ok=True)
    listing = []
    for name, kwargs, side in ZOO:
        torch.manual_seed(0)
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        t0 = time.monotonic()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
                x = torch.randn(5, 3, side, side)
                batch = torch.export.Dim('batch', min=1, max=64)
                ep = torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},))
                torch.export.save(ep, os.path.join(d, 'model.pt2'))
                ep = torch.export.load(os.path.join(d, 'model.pt2'))
                with torch.no_grad():
                    for n in (2, 5):
                        y = ep.module()(x[:n])
                        if isinstance(y, (tuple, list)):
                            y = y[0]
                        np.save(os.path.join(d, f'input{n}.npy'), x[:n].numpy())
                        np.save(os.path.join(d, f'output{n}.npy'), y.numpy())
            listing.append(name)
            if name == 'resnet18':
                # The program as the architecture template of another model's state dict.
                torch.manual_seed(1)
                other = torchvision.models.resnet18(weights=None).eval()
                td = os.path.join(out_dir, 'resnet18-template')
                os.makedirs(td, exist_ok=True)
                shutil.copyfile(os.path.join(d, 'model.pt2'), os.path.join(td, 'architecture.pt2'))
                torch.save(other.state_dict(), os.path.join(td, 'model_weights.pth'))
                with torch.no_grad():
                    for n in (2, 5):
                        np.save(os.path.join(td, f'input{n}.npy'), x[:n].numpy())
                        np.save(os.path.join(td, f'output{n}.npy'), other(x[:n]).numpy())
                listing.append('resnet18-template')
            print(f'     exported {name} in {time.monotonic() - t0:.1f} s', flush=True)
        except Exception as e:  # noqa: BLE001 -- an export torch itself cannot do
            expect(f'torch {torch.__version__} exports {name}', False, repr(e)[:300])
    export_pt2e(out_dir, listing)
    with open(os.path.join(out_dir, 'models.json'), 'w') as f:
        json.dump({'torch': torch.__version__, 'models': listing}, f)


def export_pt2e(out_dir, listing):
    """ResNet-18 quantized to int8 by PT2E (torch.ao.quantization.quantize_pt2e, the x86
    quantizer: per-channel int8 weights, uint8 activations calibrated on four batches), then
    exported with a dynamic batch: its program calls torch's quantized_decomposed operators,
    which LibTorch alone lacks (the server brings its own)."""
    from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
    import torch.ao.quantization.quantizer.x86_inductor_quantizer as xiq
    import torchvision
    name = 'resnet18-pt2e'
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    t0 = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            model = torchvision.models.resnet18(weights=None).eval()
            x = torch.randn(5, 3, 32, 32)
            batch = torch.export.Dim('batch', min=1, max=64)
            graph = torch.export.export_for_training(
                model, (x[:2],), dynamic_shapes=({0: batch},)).module()
            quantizer = xiq.X86InductorQuantizer().set_global(
                xiq.get_default_x86_inductor_quantization_config())
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for _ in range(4):
                    prepared(torch.randn(4, 3, 32, 32))
            ep = torch.export.export(convert_pt2e(prepared), (x[:2],),
                                     dynamic_shapes=({0: batch},))
            torch.export.save(ep, os.path.join(d, 'model.pt2'))
            ep = torch.export.load(os.path.join(d, 'model.pt2'))
            targets = {str(n.target) for n in ep.graph.nodes if n.op == 'call_function'}
            expect('the PT2E program calls quantized_decomposed operators',
                   'quantized_decomposed.quantize_per_tensor.default' in targets and
                   'quantized_decomposed.dequantize_per_channel.default' in targets,
                   str(sorted(targets)))
            with torch.no_grad():
                for n in (2, 5):
                    np.save(os.path.join(d, f'input{n}.npy'), x[:n].numpy())
                    np.save(os.path.join(d, f'output{n}.npy'), ep.module()(x[:n]).numpy())
        listing.append(name)
        print(f'     exported {name} in {time.monotonic() - t0:.1f} s', flush=True)
    except Exception as e:  # noqa: BLE001 -- a quantization torch itself cannot do
        expect(f'torch {torch.__version__} quantizes ResNet-18 with PT2E and exports it', False,
               repr(e)[:300])


def serve_zoo(c, zoo):
    with open(os.path.join(zoo, 'models.json')) as f:
        made = json.load(f)
    print(f'     programs exported by torch {made["torch"]}', flush=True)
    for name in made['models']:
        if name.endswith('-template'):
            put('zoo-' + name, os.path.join(zoo, name, 'architecture.pt2'), name='architecture.pt2')
            put('zoo-' + name, os.path.join(zoo, name, 'model_weights.pth'),
                name='model_weights.pth')
        else:
            put('zoo-' + name, os.path.join(zoo, name, 'model.pt2'))
        code, msg = code_of(lambda: c.load('zoo-' + name))
        if code != 'OK':
            # The one acceptable refusal: an operator this LibTorch lacks, named.
            expect(f'{name}: served, or refused naming an operator this LibTorch lacks',
                   code == 'FAILED_PRECONDITION' and 'has no operator' in msg, f'{code} {msg}')
            print(f'     {name} not served here: {msg}', flush=True)
            continue
        for n in (2, 5):
            x = np.load(os.path.join(zoo, name, f'input{n}.npy'))
            want = np.load(os.path.join(zoo, name, f'output{n}.npy'))
            code, msg = code_of(lambda: got.append(c.predict('zoo-' + name, x).output))
            if code != 'OK':
                expect(f'{name} at batch {n} serves', False, f'{code} {msg}')
                continue
            ok, detail = close_to(got[-1], want)
            expect(f'{name} at batch {n} serves Python\'s output (ep.module()(x); a template: '
                   'its state dict\'s model)', ok, detail)
        code_of(lambda: c.unload('zoo-' + name))


got = []
proc, port, _, _ = start_server(server_bin, work, store, 'export', env=env,
                                extra=('--max_queue_size', '256'))
c = Client(f'127.0.0.1:{port}', admin_token=token, timeout=300)
want_26 = np.load(os.path.join(exports, 'handmade_26', 'output.npy'))
try:
    small_cnn(c)
    if CAN_EXPORT:
        zoo = zoo_dir or os.path.join(work, 'zoo')
        export_zoo(zoo)
        serve_zoo(c, zoo)
    elif zoo_dir and os.path.exists(os.path.join(zoo_dir, 'models.json')):
        serve_zoo(c, zoo_dir)
    else:
        print(f'skip the torchvision zoo: this Python\'s torch '
              f'{torch.__version__ if torch else "(none)"} has no torch.export, and no '
              'programs exported elsewhere were given (ZOO_DIR); the Debian 13 build runs it',
              flush=True)
    expect('the server is up', proc.poll() is None)
finally:
    stop(proc)
sys.exit(summary(work))
