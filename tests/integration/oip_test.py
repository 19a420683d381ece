#!/usr/bin/env python3
"""The Open Inference Protocol (KServe v2) front door, spoken by an independent client.

The client's message classes are built here from the protocol's published message and
field numbers (written out below from the protocol's specification, not generated from
the server's .proto), and called with grpcio's generic stubs on the real server's port:
ServerLive/Ready, ModelReady, ServerMetadata, ModelMetadata, ModelInfer (raw and typed
contents, several shapes and datatypes, id echo, Triton's classification extension),
the error codes, and Triton's RepositoryIndex/Load/Unload. VGG16 outputs must equal
Python's to 1e-4. Then model-client's own --protocol v2 (predict and bench), and the
protocol's HTTP/REST binding with Python's urllib: health codes, metadata, JSON and
binary-extension inference equal to Python's outputs, repository calls, errors, 404s.
Usage: oip_test.py SERVER_BIN CLIENT_BIN FIXTURES TMP
"""
import os
import subprocess
import sys
import tempfile
import time

import json
import pty
import struct
import urllib.error
import urllib.request

import grpc
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'testing'))
from checks import expect, stop, summary  # noqa: E402

server_bin, client_bin, fixtures, tmp_root = sys.argv[1:5]
os.makedirs(tmp_root, exist_ok=True)

from oip_messages import M, call  # noqa: E402

# ------------------------------------------------------------------ the server
work = tempfile.mkdtemp(prefix='oip-', dir=tmp_root)
store = os.path.join(work, 'store')
for name in ('vgg16', 'tiny'):
    d = os.path.join(store, name, '1')
    os.makedirs(d)
    os.link(os.path.join(fixtures, name, 'model_weights.pth'), os.path.join(d, 'model_weights.pth'))
arch = {n: open(os.path.join(fixtures, n, 'arch.txt')).read().strip() for n in ('vgg16', 'tiny')}
port_file = os.path.join(work, 'port')
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
proc = subprocess.Popen([server_bin, '--store', store, '--model', f'vgg16={arch["vgg16"]}',
                         '--model', f'tiny={arch["tiny"]}', '--listen', '127.0.0.1:0',
                         '--port_file', port_file, '--metrics_listen', '', '--http_listen', '127.0.0.1:0', '--http_port_file', os.path.join(work, 'http_port')],
                        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, 'log'), 'w'),
                        env=env)


def code_of(fn):
    try:
        fn()
        return grpc.StatusCode.OK, ''
    except grpc.RpcError as e:
        return e.code(), e.details()


def infer_request(model, x, datatype='FP32', raw=True, version='', rid='', classes=0):
    r = M['ModelInferRequest'](model_name=model, model_version=version, id=rid)
    t = r.inputs.add(name='input', datatype=datatype, shape=list(x.shape))
    if raw:
        r.raw_input_contents.append(x.tobytes())
    elif datatype == 'FP32':
        t.contents.fp32_contents.extend(x.ravel().tolist())
    elif datatype == 'FP64':
        t.contents.fp64_contents.extend(x.ravel().tolist())
    if classes:
        out = r.outputs.add(name='output')
        out.parameters['classification'].int64_param = classes
    return r


try:
    for _ in range(600):
        if os.path.exists(port_file):
            break
        time.sleep(0.1)
    ch = grpc.insecure_channel('127.0.0.1:' + open(port_file).read().strip(),
                               options=[('grpc.max_receive_message_length', 64 << 20)])
    for _ in range(600):
        if call(ch, 'ServerReady', M['ServerReadyRequest'](), 'ServerReadyResponse').ready:
            break
        time.sleep(0.2)
    expect('ServerLive', call(ch, 'ServerLive', M['ServerLiveRequest'](), 'ServerLiveResponse').live)
    expect('ServerReady once both startup models serve',
           call(ch, 'ServerReady', M['ServerReadyRequest'](), 'ServerReadyResponse').ready)
    ready = lambda n, v='': call(ch, 'ModelReady', M['ModelReadyRequest'](name=n, version=v),
                                 'ModelReadyResponse').ready
    expect('ModelReady vgg16', ready('vgg16') and ready('vgg16', '1'))
    expect('ModelReady of a version that does not serve is false', not ready('vgg16', '7'))
    expect('ModelReady of an unknown model is NOT_FOUND',
           code_of(lambda: ready('nope'))[0] == grpc.StatusCode.NOT_FOUND)
    md = call(ch, 'ServerMetadata', M['ServerMetadataRequest'](), 'ServerMetadataResponse')
    expect('ServerMetadata', md.name == 'model-server' and md.version and
           set(md.extensions) >= {'classification', 'model_repository'}, str(md))
    mm = call(ch, 'ModelMetadata', M['ModelMetadataRequest'](name='vgg16'), 'ModelMetadataResponse')
    expect('ModelMetadata', mm.name == 'vgg16' and list(mm.versions) == ['1'] and
           mm.platform == 'pytorch_libtorch' and mm.inputs[0].datatype == 'FP32' and
           list(mm.inputs[0].shape) == [-1, 3, -1, -1] and mm.outputs[0].name == 'output', str(mm))

    # ModelInfer: raw in -> raw out, VGG16 against Python.
    x = np.load(os.path.join(fixtures, 'vgg16', 'input.npy'))
    y = np.load(os.path.join(fixtures, 'vgg16', 'output.npy'))
    r = call(ch, 'ModelInfer', infer_request('vgg16', x, rid='req-42'), 'ModelInferResponse')
    got = np.frombuffer(r.raw_output_contents[0], dtype=np.float32).reshape(list(r.outputs[0].shape))
    expect('ModelInfer raw VGG16 = Python (1e-4)', got.shape == y.shape and
           np.abs(got - y).max() <= 1e-4, f'shape {got.shape}')
    expect('id, name, version and datatype come back', r.id == 'req-42' and r.model_name == 'vgg16'
           and r.model_version == '1' and r.outputs[0].datatype == 'FP32', str(r.outputs[0]))
    # Typed contents in -> typed out; a batch of 4, then one unbatched sample, then FP64.
    x = np.load(os.path.join(fixtures, 'tiny', 'input.npy'))
    y = np.load(os.path.join(fixtures, 'tiny', 'output.npy'))
    r = call(ch, 'ModelInfer', infer_request('tiny', x, raw=False), 'ModelInferResponse')
    got = np.array(r.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(
        list(r.outputs[0].shape))
    expect('ModelInfer typed FP32 [4,3,32,32] = Python', len(r.raw_output_contents) == 0 and
           got.shape == y.shape and np.abs(got - y).max() <= 1e-4)
    r = call(ch, 'ModelInfer', infer_request('tiny', x[1], raw=False), 'ModelInferResponse')
    got = np.array(r.outputs[0].contents.fp32_contents, dtype=np.float32)
    expect('ModelInfer unbatched [3,32,32] -> [10]', list(r.outputs[0].shape) == [10] and
           np.abs(got - y[1]).max() <= 1e-4, str(list(r.outputs[0].shape)))
    r = call(ch, 'ModelInfer', infer_request('tiny', x.astype(np.float64), 'FP64', raw=False),
             'ModelInferResponse')
    got = np.array(r.outputs[0].contents.fp64_contents).reshape(list(r.outputs[0].shape))
    expect('ModelInfer typed FP64 answered in FP64', r.outputs[0].datatype == 'FP64' and
           np.abs(got - y).max() <= 1e-4)
    r = call(ch, 'ModelInfer', infer_request('tiny', x, raw=False, classes=3), 'ModelInferResponse')
    top = [s.decode() for s in r.outputs[0].contents.bytes_contents]
    want = [f'{y[i, j]:.6f}:{j}' for i in range(4) for j in np.argsort(-y[i])[:3]]
    expect('classification 3 -> BYTES "<score>:<index>", best first',
           r.outputs[0].datatype == 'BYTES' and list(r.outputs[0].shape) == [4, 3] and
           [t.split(':')[1] for t in top] == [w.split(':')[1] for w in want] and
           all(abs(float(a.split(':')[0]) - float(b.split(':')[0])) <= 1e-4
               for a, b in zip(top, want)), f'{top[:3]} vs {want[:3]}')

    # Errors: the codes the protocol's users expect, with Predict's messages.
    def infer(req):
        return lambda: call(ch, 'ModelInfer', req, 'ModelInferResponse')

    bad = infer_request('tiny', x)
    bad.inputs[0].datatype = 'FOO'
    code, msg = code_of(infer(bad))
    expect('unknown datatype -> INVALID_ARGUMENT', code == grpc.StatusCode.INVALID_ARGUMENT, msg)
    bad = infer_request('tiny', x)
    bad.raw_input_contents[0] = bad.raw_input_contents[0][:-4]
    code, msg = code_of(infer(bad))
    expect('byte count -> INVALID_ARGUMENT', code == grpc.StatusCode.INVALID_ARGUMENT, msg)
    code, msg = code_of(infer(infer_request('tiny', x[:, :2].copy())))
    expect('wrong channels -> INVALID_ARGUMENT with Predict\'s message',
           code == grpc.StatusCode.INVALID_ARGUMENT and 'has 2 channels, expected' in msg, msg)
    code, msg = code_of(infer(infer_request('nope', x)))
    expect('unknown model -> NOT_FOUND', code == grpc.StatusCode.NOT_FOUND, msg)
    code, msg = code_of(infer(infer_request('tiny', x, version='9')))
    expect('unknown version -> NOT_FOUND', code == grpc.StatusCode.NOT_FOUND, msg)

    # Triton's repository extension.
    idx = lambda ready=False: call(ch, 'RepositoryIndex', M['RepositoryIndexRequest'](ready=ready),
                                   'RepositoryIndexResponse').models
    expect('RepositoryIndex', {(m.name, m.version, m.state) for m in idx()} ==
           {('tiny', '1', 'READY'), ('vgg16', '1', 'READY')}, str(idx()))
    call(ch, 'RepositoryModelUnload', M['RepositoryModelUnloadRequest'](model_name='tiny'),
         'RepositoryModelUnloadResponse')
    expect('RepositoryModelUnload -> not ready, UNAVAILABLE, ServerReady false',
           not ready('tiny') and [m.state for m in idx() if m.name == 'tiny'] == ['UNAVAILABLE'] and
           [m.name for m in idx(ready=True)] == ['vgg16'] and
           not call(ch, 'ServerReady', M['ServerReadyRequest'](), 'ServerReadyResponse').ready)
    call(ch, 'RepositoryModelLoad', M['RepositoryModelLoadRequest'](model_name='tiny'),
         'RepositoryModelLoadResponse')
    expect('RepositoryModelLoad -> ready again', ready('tiny'))
    code, msg = code_of(lambda: call(ch, 'RepositoryModelLoad',
                                     M['RepositoryModelLoadRequest'](model_name='nope'),
                                     'RepositoryModelLoadResponse'))
    expect('RepositoryModelLoad of a model not in the store -> NOT_FOUND',
           code == grpc.StatusCode.NOT_FOUND, f'{code} {msg}')

    # model-client --protocol v2: predict and bench go through ModelInfer.
    target = '127.0.0.1:' + open(port_file).read().strip()
    out = os.path.join(work, 'v2_out.npy')
    r = subprocess.run([client_bin, '--target', target, '--protocol', 'v2', 'predict', '--model',
                        'tiny', '--input', os.path.join(fixtures, 'tiny', 'input.npy'),
                        '--top_k', '0', '--output', out], capture_output=True, text=True, env=env)
    expect('model-client --protocol v2 predict = Python', r.returncode == 0 and
           np.abs(np.load(out) - y).max() <= 1e-4, r.stdout + r.stderr)
    r = subprocess.run([client_bin, '--target', target, '--protocol', 'v2', 'bench', '--model',
                        'tiny', '--shape', '3,32,32', '--concurrency', '2', '--duration', '1s',
                        '--warmup', '0s'], capture_output=True, text=True, env=env)
    metrics_ok = r.returncode == 0
    expect('model-client --protocol v2 bench runs without errors', metrics_ok, r.stdout + r.stderr)

    # The CLI's conveniences: round-robin over a dns:/// target, help, --force, any-case --format.
    r = subprocess.run([client_bin, '--target', 'dns:///' + target, '--lb', 'round_robin',
                        'status', 'tiny'], capture_output=True, text=True, env=env)
    expect('model-client --lb round_robin with a dns:/// target', r.returncode == 0 and
           'READY' in r.stdout, r.stdout + r.stderr)
    r = subprocess.run([client_bin, 'help', 'upload'], capture_output=True, text=True)
    expect('model-client help upload', r.returncode == 0 and '--architecture_file' in r.stdout and
           'predict' not in r.stdout, r.stdout)
    existing = os.path.join(work, 'existing.pth')
    open(existing, 'w').write('keep me')
    dl = [client_bin, '--target', target, 'download', 'tiny', '--file', existing]
    r = subprocess.run(dl, capture_output=True, text=True, env=env)
    kept = open(existing).read() == 'keep me'
    r2 = subprocess.run(dl + ['--force'], capture_output=True, text=True, env=env)
    expect('download refuses to overwrite without --force, overwrites with it',
           r.returncode == 2 and '--force' in r.stderr and kept and r2.returncode == 0 and
           open(existing, 'rb').read() == open(os.path.join(fixtures, 'tiny', 'model_weights.pth'),
                                                'rb').read(), r.stderr + r2.stderr)
    r = subprocess.run([client_bin, '--target', target, 'save', 'tiny', '--format', 'state_dict',
                        '--target_model', 'tiny_copy'], capture_output=True, text=True, env=env)
    expect('--format in lower case', r.returncode == 0, r.stdout + r.stderr)
    # A progress line on a terminal (a pseudo-TTY here), none when piped.
    up = [client_bin, '--target', target, 'upload', 'tiny_up', '--file',
          os.path.join(fixtures, 'tiny', 'model_weights.pth'), '--architecture', arch['tiny']]
    master, slave = pty.openpty()
    p = subprocess.Popen(up, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                         env=env)
    os.close(slave)
    tty_out = b''
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        tty_out += chunk
    p.wait(timeout=60)
    os.close(master)
    piped = subprocess.run(up, capture_output=True, text=True, env=env)
    expect('upload shows progress on a TTY only', p.returncode == 0 and b'100.0%' in tty_out and
           b'MB/s' in tty_out and piped.returncode == 0 and '%' not in piped.stderr,
           repr(tty_out[-200:]) + piped.stderr)

    # ------------------------------------------------------------ HTTP/REST
    base = 'http://127.0.0.1:' + open(os.path.join(work, 'http_port')).read().strip()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def http(method, path, body=None, headers=None):
        # As protocol clients do: JSON (or binary) content types.
        headers = dict({'Content-Type': 'application/json'}, **(headers or {}))
        if method == 'POST' and body is None:
            body = b''
        req = urllib.request.Request(base + path, data=body, method=method, headers=headers)
        try:
            with opener.open(req, timeout=60) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    codes = {p: http('GET', p)[0] for p in (
        '/v2/health/live', '/v2/health/ready', '/v2/models/vgg16/ready',
        '/v2/models/vgg16/versions/1/ready', '/v2/models/vgg16/versions/7/ready',
        '/v2/models/nope/ready', '/v2/nothing-here')}
    expect('REST health and readiness codes', codes == {
        '/v2/health/live': 200, '/v2/health/ready': 200, '/v2/models/vgg16/ready': 200,
        '/v2/models/vgg16/versions/1/ready': 200, '/v2/models/vgg16/versions/7/ready': 400,
        '/v2/models/nope/ready': 404, '/v2/nothing-here': 404}, str(codes))
    st, _, body = http('GET', '/v2')
    expect('REST GET /v2', st == 200 and json.loads(body)['name'] == 'model-server', body)
    st, _, body = http('GET', '/v2/models/tiny')
    meta = json.loads(body) if st == 200 else {}
    expect('REST model metadata', meta.get('versions') == ['1'] and
           meta.get('inputs', [{}])[0].get('shape') == [-1, 3, -1, -1], body)
    req = {'id': 'r1', 'inputs': [{'name': 'input', 'shape': list(x.shape), 'datatype': 'FP32',
                                   'data': x.tolist()}]}
    st, _, body = http('POST', '/v2/models/tiny/infer', json.dumps(req).encode(),
                       {'Content-Type': 'application/json'})
    out = json.loads(body) if st == 200 else {}
    got = np.array(out.get('outputs', [{}])[0].get('data', []), dtype=np.float32)
    expect('REST JSON infer = Python', st == 200 and out.get('id') == 'r1' and
           got.size == y.size and np.abs(got.reshape(y.shape) - y).max() <= 1e-4, body[:300])
    header = json.dumps({'inputs': [{'name': 'input', 'shape': list(x.shape), 'datatype': 'FP32',
                                     'parameters': {'binary_data_size': x.nbytes}}],
                         'outputs': [{'name': 'output', 'parameters': {'binary_data': True}}]})
    st, hdrs, body = http('POST', '/v2/models/tiny/versions/1/infer',
                          header.encode() + x.astype(np.float32).tobytes(),
                          {'Inference-Header-Content-Length': str(len(header)),
                           'Content-Type': 'application/octet-stream'})
    ok = st == 200
    if ok:
        n = int(hdrs['Inference-Header-Content-Length'])
        meta = json.loads(body[:n])
        got = np.frombuffer(body[n:], dtype=np.float32).reshape(meta['outputs'][0]['shape'])
        ok = (meta['outputs'][0]['parameters']['binary_data_size'] == y.nbytes and
              np.abs(got - y).max() <= 1e-4)
    expect('REST binary-data extension in and out = Python', ok, body[:300])
    bad = dict(req, inputs=[dict(req['inputs'][0], datatype='FOO')])
    st, _, body = http('POST', '/v2/models/tiny/infer', json.dumps(bad).encode())
    expect('REST bad datatype -> 400 {"error"}', st == 400 and 'FOO' in json.loads(body)['error'],
           body)
    st, _, body = http('POST', '/v2/models/nope/infer', json.dumps(req).encode())
    expect('REST unknown model -> 404 {"error"}', st == 404 and 'error' in json.loads(body), body)
    st, _, body = http('POST', '/v2/models/tiny/infer', b'{not json')
    expect('REST malformed JSON -> 400', st == 400, body)
    # Hostile bodies: refused with their code, the server keeps serving.
    short = json.dumps({'inputs': [{'name': 'input', 'shape': list(x.shape), 'datatype': 'FP32',
                                    'parameters': {'binary_data_size': x.nbytes}}]})
    st1, _, b1 = http('POST', '/v2/models/tiny/infer', short.encode() + b'\0' * 100,
                      {'Inference-Header-Content-Length': str(len(short)),
                       'Content-Type': 'application/octet-stream'})
    st2, _, b2 = http('POST', '/v2/models/tiny/infer', short.encode(),
                      {'Inference-Header-Content-Length': str(len(short) + 5)})
    deep = '{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": ' + \
        '[' * 200000 + '1' + ']' * 200000 + '}]}'
    st3, _, b3 = http('POST', '/v2/models/tiny/infer', deep.encode())
    big = json.dumps({'inputs': [{'name': 'input', 'shape': [3000000], 'datatype': 'FP32',
                                  'data': [0.5] * 3000000}]})
    st4, _, b4 = http('POST', '/v2/models/tiny/infer', big.encode())
    expect('REST hostile bodies: binary size past the body, header length past the body, '
           '200000-deep nesting -> 400; 9 MB of JSON -> 413; still live',
           (st1, st2, st3, st4) == (400, 400, 400, 413) and b'binary_data_size' in b1 and
           b'bytes of the body are left' in b1 and b'within the' in b2 and b'deeper than' in b3 and b'binary-data' in b4 and
           http('GET', '/v2/health/live')[0] == 200,
           str((st1, st2, st3, st4, b1[:80], b2[:80], b3[:80], b4[:80])))
    st, _, body = http('POST', '/v2/repository/index', b'{}')
    expect('REST repository index', st == 200 and
           {m['name'] for m in json.loads(body)} >= {'tiny', 'vgg16'}, body)
    st1 = http('POST', '/v2/repository/models/tiny/unload')[0]
    st2 = http('GET', '/v2/models/tiny/ready')[0]
    st3 = http('POST', '/v2/repository/models/tiny/load')[0]
    st4 = http('GET', '/v2/models/tiny/ready')[0]
    expect('REST unload / load (loopback admin)', (st1, st2, st3, st4) == (200, 400, 200, 200),
           str((st1, st2, st3, st4)))
    st, _, body = http('GET', '/metrics')
    expect('/metrics on the HTTP port counts the REST inferences as ModelInfer', st == 200 and
           b'method="ModelInfer"' in body, body[:200])
finally:
    stop(proc)

sys.exit(summary(work))
