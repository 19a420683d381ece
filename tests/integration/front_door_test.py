#!/usr/bin/env python3
"""The open ports against hostile traffic, on the real server.

REST (`--http_listen`): binary_data_size of -1, 2^63 and 2^64-1 on a 61 MB body -> 400
with the server's RSS flat; 40 inputs -> 400, still live; INT8 300 and UINT8 -1 -> 400
(out of range); an unknown model -> 404 before its body is parsed; an Authorization header
with bytes outside printable ASCII -> 400, the process alive. gRPC: ModelInfer of
an unknown model without inputs -> NOT_FOUND. 1,000 slow connections (half a header,
one more byte between polls, from ten other loopback addresses) on the REST port and on
the metrics port while /v2/health/live and /metrics answer each poll from 127.0.0.1
within a second. 1,000 idle or half-open HTTP/2 connections and a flood of 2,000 open
streams on the gRPC port while health and ModelInfer answer. A hand-copied version whose
labels.txt is a symlink to a file outside the store is refused at load, naming it.
Usage: front_door_test.py SERVER_BIN FIXTURES TMP
"""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import grpc
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'testing'))
from checks import expect, expect_memory, stop, summary  # noqa: E402
from oip_messages import M, call  # noqa: E402

server_bin, fixtures, tmp_root = sys.argv[1:4]
os.makedirs(tmp_root, exist_ok=True)
work = os.path.abspath(tempfile.mkdtemp(prefix='front-door-', dir=tmp_root))
store = os.path.join(work, 'store')
arch = open(os.path.join(fixtures, 'tiny', 'arch.txt')).read().strip()
for name in ('tiny', 'linked'):
    d = os.path.join(store, name, '1')
    os.makedirs(d)
    os.link(os.path.join(fixtures, 'tiny', 'model_weights.pth'), os.path.join(d, 'model_weights.pth'))
secret = os.path.join(work, 'secret.txt')  # outside the store
with open(secret, 'w') as f:
    f.write(''.join(f'secret line {i}\n' for i in range(10)))  # tiny has 10 classes
os.symlink(secret, os.path.join(store, 'linked', '1', 'labels.txt'))

ports = {k: os.path.join(work, k) for k in ('grpc', 'http', 'metrics')}
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
log_path = os.path.join(work, 'log')
proc = subprocess.Popen([server_bin, '--store', store, '--model', f'tiny={arch}',
                         '--model', f'linked={arch}', '--listen', '127.0.0.1:0',
                         '--port_file', ports['grpc'], '--http_listen', '127.0.0.1:0',
                         '--http_port_file', ports['http'], '--metrics_listen', '127.0.0.1:0',
                         '--metrics_port_file', ports['metrics'], '--shutdown_grace_seconds', '1'],
                        stdout=subprocess.DEVNULL, stderr=open(log_path, 'w'), env=env)


def rss_mib():
    with open(f'/proc/{proc.pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return -1


def http(port, method, path, body=None, headers=None, timeout=30):
    req = urllib.request.Request(f'http://127.0.0.1:{port}{path}', data=body, method=method,
                                 headers=dict({'Content-Type': 'application/json'}, **(headers or {})))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def poll(port, source, path):
    """One GET from 127.0.0.`source` on a fresh connection; the status line, or why not
    within a second."""
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.bind((f'127.0.0.{source}', 0))
        s.connect(('127.0.0.1', port))
        s.sendall(f'GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'.encode())
        return s.recv(64).split(b'\r\n')[0].decode()
    except OSError as e:
        return f'no answer: {e}'
    finally:
        s.close()


def slow_connections(port, n=1000):
    """n connections from 127.0.0.2..11 that send half a request header."""
    conns = []
    for i in range(n):
        s = socket.socket()
        s.bind((f'127.0.0.{2 + i % 10}', 0))
        s.connect(('127.0.0.1', port))
        s.sendall(b'GET /v2/health/live HTTP/1.1\r\nX-Slow: a')
        conns.append(s)
    return conns


def frame(kind, flags, stream, payload=b''):
    return struct.pack('>I', len(payload))[1:] + bytes([kind, flags]) + struct.pack('>I', stream) + payload


def hpack_literal(index, value):
    """A literal header field without indexing, name from the static table."""
    v = value.encode()
    return (bytes([index]) if index < 15 else bytes([15, index - 15])) + bytes([len(v)]) + v


PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
HEALTH_HEADERS = (b'\x83\x86' + hpack_literal(4, '/grpc.health.v1.Health/Check') +
                  hpack_literal(1, '127.0.0.1') + hpack_literal(31, 'application/grpc') +
                  b'\x00\x02te\x08trailers')


def health(channel):
    check = channel.unary_unary('/grpc.health.v1.Health/Check',
                                request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return check(b'', timeout=5)


try:
    for _ in range(600):
        if all(os.path.exists(p) for p in ports.values()):
            break
        time.sleep(0.1)
    port = {k: int(open(p).read()) for k, p in ports.items()}
    ch = grpc.insecure_channel(f'127.0.0.1:{port["grpc"]}')
    for _ in range(600):
        if call(ch, 'ModelReady', M['ModelReadyRequest'](name='tiny'), 'ModelReadyResponse').ready:
            break
        time.sleep(0.2)
    x = np.load(os.path.join(fixtures, 'tiny', 'input.npy')).astype(np.float32)

    # --- sizes from the wire
    body_size = 61 << 20
    blob = b'\0' * body_size
    before = rss_mib()
    codes, peak = [], before
    for size in (-1, 1 << 63, (1 << 64) - 1):
        head = json.dumps({'inputs': [{'name': 'input', 'shape': list(x.shape), 'datatype': 'FP32',
                                       'parameters': {'binary_data_size': size}}] * 3}).encode()
        st, body = http(port['http'], 'POST', '/v2/models/tiny/infer', head + blob,
                        {'Inference-Header-Content-Length': str(len(head)),
                         'Content-Type': 'application/octet-stream'})
        codes.append((st, body[:100]))
        peak = max(peak, rss_mib())
    expect('binary_data_size -1, 2^63, 2^64-1 on a 61 MB body -> 400',
           all(c == 400 for c, _ in codes), str(codes))
    expect_memory('... and RSS stays within 4x the body (it used to copy the body once per input)',
                  peak - before < 4 * 61, f'RSS {before:.0f} -> {peak:.0f} MiB')
    forty = json.dumps({'inputs': [{'name': 'input', 'shape': [1], 'datatype': 'FP32',
                                    'parameters': {'binary_data_size': -1}}] * 40}).encode()
    st40, body40 = http(port['http'], 'POST', '/v2/models/tiny/infer', forty + blob,
                        {'Inference-Header-Content-Length': str(len(forty)),
                         'Content-Type': 'application/octet-stream'})
    forty_ok = json.dumps({'inputs': [{'name': f'in{i}', 'shape': [1], 'datatype': 'FP32',
                                       'parameters': {'binary_data_size': 4}} for i in range(40)]})
    st40b, body40b = http(port['http'], 'POST', '/v2/models/tiny/infer',
                          forty_ok.encode() + b'\0' * 160,
                          {'Inference-Header-Content-Length': str(len(forty_ok)),
                           'Content-Type': 'application/octet-stream'})
    expect('40 inputs -> 400, the process alive', st40 == 400 and st40b == 400 and
           proc.poll() is None and http(port['http'], 'GET', '/v2/health/live')[0] == 200,
           f'{st40} {body40[:100]} {st40b} {body40b[:100]}')
    del blob

    def typed(datatype, values):
        return json.dumps({'inputs': [{'name': 'input', 'shape': [len(values)],
                                       'datatype': datatype, 'data': values}]}).encode()
    s8, b8 = http(port['http'], 'POST', '/v2/models/tiny/infer', typed('INT8', [300]))
    su8, bu8 = http(port['http'], 'POST', '/v2/models/tiny/infer', typed('UINT8', [-1]))
    sf, bf = http(port['http'], 'POST', '/v2/models/tiny/infer', typed('INT32', [1.5]))
    expect('REST INT8 300, UINT8 -1 and INT32 1.5 -> 400, as over gRPC',
           (s8, su8, sf) == (400, 400, 400) and b'out of range' in b8 and
           b'out of range' in bu8 and b'not an integer' in bf, f'{b8} {bu8} {bf}')
    st, body = http(port['http'], 'POST', '/v2/models/nosuchmodel/infer', b'{not even json')
    stv, bodyv = http(port['http'], 'POST', '/v2/models/tiny/versions/9/infer', b'{not even json')
    expect('REST infer of an unknown model or version -> 404 before the body is parsed',
           st == 404 and stv == 404 and b'nosuchmodel' in body, f'{st} {body} {stv} {bodyv}')
    bad_auth = []
    for value in (b'Bearer \xff\xfe', b'Bearer a\x7fb'):
        s = socket.create_connection(('127.0.0.1', port['http']), timeout=5)
        s.sendall(b'GET /v2/health/live HTTP/1.1\r\nAuthorization: ' + value +
                  b'\r\nConnection: close\r\n\r\n')
        bad_auth.append(s.recv(64).split(b'\r\n')[0])
        s.close()
    time.sleep(0.2)
    expect('an Authorization header gRPC metadata cannot carry -> 400, the process alive '
           '(it used to reach gRPC, which asserts on it)',
           all(b.startswith(b'HTTP/1.1 400') for b in bad_auth) and proc.poll() is None and
           http(port['http'], 'GET', '/v2/health/live')[0] == 200, str(bad_auth))
    try:
        call(ch, 'ModelInfer', M['ModelInferRequest'](model_name='nosuchmodel'), 'ModelInferResponse')
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
    expect('gRPC ModelInfer of an unknown model without inputs -> NOT_FOUND',
           code == grpc.StatusCode.NOT_FOUND, str(code))

    # --- slow connections on both HTTP ports
    for name, path in (('http', '/v2/health/live'), ('metrics', '/metrics')):
        conns = slow_connections(port[name])
        answers = []
        for _ in range(5):
            answers.append(poll(port[name], 1, path))
            for s in conns:
                try:
                    s.send(b'a')
                except OSError:
                    pass
            time.sleep(0.5)
        for s in conns:
            s.close()
        expect(f'1,000 slow connections on the {name} port: {path} answers each poll '
               'within a second', all(a.startswith('HTTP/1.1 200') for a in answers), str(answers))

    # --- idle, half-open and flooding HTTP/2 connections on the gRPC port
    conns = []
    for i in range(1000):
        s = socket.socket()
        s.connect(('127.0.0.1', port['grpc']))
        if i % 2:
            s.sendall(PREFACE + frame(4, 0, 0))  # preface + SETTINGS, then nothing
        conns.append(s)
    flood = socket.socket()
    flood.connect(('127.0.0.1', port['grpc']))
    flood.sendall(PREFACE + frame(4, 0, 0) +
                  b''.join(frame(1, 4, 2 * i + 1, HEALTH_HEADERS) for i in range(2000)))
    t0 = time.monotonic()
    healthy = health(ch)
    req = M['ModelInferRequest'](model_name='tiny')
    req.inputs.add(name='input', datatype='FP32', shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    out = call(ch, 'ModelInfer', req, 'ModelInferResponse')
    took = time.monotonic() - t0
    want = np.load(os.path.join(fixtures, 'tiny', 'output.npy'))
    got = np.frombuffer(out.raw_output_contents[0], np.float32).reshape(want.shape)
    fresh = grpc.insecure_channel(f'127.0.0.1:{port["grpc"]}')
    expect('1,000 idle or half-open HTTP/2 connections and 2,000 open streams: health and '
           'ModelInfer answer (on a held and a new channel)',
           healthy == b'\x08\x01' and health(fresh) == b'\x08\x01' and
           np.abs(got - want).max() < 1e-4, f'{healthy!r} {took:.2f} s')
    for s in conns + [flood]:
        s.close()

    # --- a symlink out of the store
    ready = call(ch, 'ModelReady', M['ModelReadyRequest'](name='linked'), 'ModelReadyResponse').ready
    index = call(ch, 'RepositoryIndex', M['RepositoryIndexRequest'](), 'RepositoryIndexResponse')
    reason = [m.reason for m in index.models if m.name == 'linked']
    expect('labels.txt symlinked out of the store: the version is refused at load, naming it',
           not ready and reason and 'labels.txt' in reason[0] and 'outside the store' in reason[0],
           f'ready={ready} {reason}')
    expect('the server is still alive', proc.poll() is None and health(ch) == b'\x08\x01')
finally:
    stop(proc)
rc = summary()
if rc:
    print(open(log_path).read()[-3000:])
sys.exit(rc)
