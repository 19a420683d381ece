#!/usr/bin/env python3
"""Triton's system shared memory extension on the real server, spoken by a client built
from the protocol's field numbers (tests/testing/oip_messages.py) over gRPC and HTTP, with
shared memory objects made by Python's multiprocessing.shared_memory (shm_open):
inputs read from a region and outputs written to one equal the raw path's outputs bit for
bit (with region and tensor offsets, and in a stream); status lists what was registered;
hostile registrations (past the object, wrapping sizes, path-like keys, a symlink in
/dev/shm, too many regions or bytes) and hostile tensor windows are INVALID_ARGUMENT /
NOT_FOUND / RESOURCE_EXHAUSTED; an object shrunk after registration is an error, not a
crash (the server reads with pread, it maps nothing); registration and shared memory
inference are admin calls (token); everything is refused without --allow_shared_memory;
`model-client bench --shared_memory system` runs and cleans up after itself.
Usage: shared_memory_test.py SERVER_BIN CLIENT_BIN FIXTURES TMP
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from multiprocessing import shared_memory

import grpc
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'testing'))
from checks import expect, stop, summary  # noqa: E402
from oip_messages import M, MESSAGES, build_pool  # noqa: E402

server_bin, client_bin, fixtures, tmp_root = sys.argv[1:5]
os.makedirs(tmp_root, exist_ok=True)
work = os.path.abspath(tempfile.mkdtemp(prefix='shm-', dir=tmp_root))
store = os.path.join(work, 'store')
d = os.path.join(store, 'tiny', '1')
os.makedirs(d)
os.link(os.path.join(fixtures, 'tiny', 'model_weights.pth'), os.path.join(d, 'model_weights.pth'))
arch = open(os.path.join(fixtures, 'tiny', 'arch.txt')).read().strip()
token = 'shm-secret-token'
token_file = os.path.join(work, 'token')
with open(token_file, 'w') as f:
    f.write(token)
AUTH = [('authorization', f'Bearer {token}')]
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}

# Triton's shared memory messages, by field number (grpc_service.proto).
MESSAGES.update({
    'SystemSharedMemoryStatusRequest': [('name', 1, 'string')],
    'RegionStatus': [('name', 1, 'string'), ('key', 2, 'string'), ('offset', 3, 'uint64'),
                     ('byte_size', 4, 'uint64')],
    'SystemSharedMemoryStatusResponse': [('regions', 1, 'map:RegionStatus')],
    'SystemSharedMemoryRegisterRequest': [('name', 1, 'string'), ('key', 2, 'string'),
                                          ('offset', 3, 'uint64'), ('byte_size', 4, 'uint64')],
    'SystemSharedMemoryRegisterResponse': [],
    'SystemSharedMemoryUnregisterRequest': [('name', 1, 'string')],
    'SystemSharedMemoryUnregisterResponse': [],
})
M.update(build_pool())


def start(name, *extra):
    ports = {k: os.path.join(work, f'{name}-{k}') for k in ('grpc', 'http')}
    log = open(os.path.join(work, f'{name}.log'), 'w')
    proc = subprocess.Popen([server_bin, '--store', store, '--model', f'tiny={arch}',
                             '--listen', '127.0.0.1:0', '--port_file', ports['grpc'],
                             '--http_listen', '127.0.0.1:0', '--http_port_file', ports['http'],
                             '--metrics_listen', '', '--admin_token_file', token_file,
                             '--shutdown_grace_seconds', '1', *extra],
                            stdout=subprocess.DEVNULL, stderr=log, env=env)
    for _ in range(600):
        if all(os.path.exists(p) and os.path.getsize(p) > 0 for p in ports.values()):
            break
        time.sleep(0.1)
    port = {k: int(open(p).read()) for k, p in ports.items()}
    ch = grpc.insecure_channel(f'127.0.0.1:{port["grpc"]}')
    for _ in range(600):
        try:
            if call(ch, 'ModelReady', M['ModelReadyRequest'](name='tiny'), 'ModelReadyResponse').ready:
                break
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    return proc, ch, port['http'], port['grpc']


def call(ch, method, request, reply_type, metadata=None):
    stub = ch.unary_unary(f'/inference.GRPCInferenceService/{method}',
                          request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=M[reply_type].FromString)
    return stub(request, timeout=60, metadata=metadata)


def code_of(fn):
    try:
        fn()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def detail_of(fn):
    try:
        fn()
        return ''
    except grpc.RpcError as e:
        return e.details()


def register(ch, name, key, byte_size, offset=0, metadata=AUTH):
    return call(ch, 'SystemSharedMemoryRegister',
                M['SystemSharedMemoryRegisterRequest'](name=name, key=key, offset=offset,
                                                       byte_size=byte_size),
                'SystemSharedMemoryRegisterResponse', metadata)


def unregister(ch, name='', metadata=AUTH):
    return call(ch, 'SystemSharedMemoryUnregister',
                M['SystemSharedMemoryUnregisterRequest'](name=name),
                'SystemSharedMemoryUnregisterResponse', metadata)


def status(ch, name='', metadata=AUTH):
    r = call(ch, 'SystemSharedMemoryStatus', M['SystemSharedMemoryStatusRequest'](name=name),
             'SystemSharedMemoryStatusResponse', metadata)
    return {k: (v.name, v.key, v.offset, v.byte_size) for k, v in r.regions.items()}


def shm_param(region, size, offset=None):
    p = {'shared_memory_region': M['InferParameter'](string_param=region),
         'shared_memory_byte_size': M['InferParameter'](int64_param=size)}
    if offset is not None:
        p['shared_memory_offset'] = M['InferParameter'](int64_param=offset)
    return p


def infer_request(x, in_region=None, in_size=None, in_offset=None, out_region=None,
                  out_size=None, out_offset=None, id_=''):
    r = M['ModelInferRequest'](model_name='tiny', id=id_)
    t = r.inputs.add(name='input', datatype='FP32', shape=list(x.shape))
    if in_region is None:
        r.raw_input_contents.append(x.tobytes())
    else:
        for k, v in shm_param(in_region, x.nbytes if in_size is None else in_size,
                              in_offset).items():
            t.parameters[k].CopyFrom(v)
    if out_region is not None:
        o = r.outputs.add(name='output')
        for k, v in shm_param(out_region, out_size, out_offset).items():
            o.parameters[k].CopyFrom(v)
    return r


def http(port, method, path, body=None, headers=None):
    h = {'Content-Type': 'application/json', **(headers or {})}
    req = urllib.request.Request(f'http://127.0.0.1:{port}{path}', data=body, method=method,
                                 headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b'null')
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b'null')


x = np.load(os.path.join(fixtures, 'tiny', 'input.npy')).astype(np.float32)[:2]  # [2,3,32,32]
objects = []


def new_object(size):
    o = shared_memory.SharedMemory(create=True, size=size)
    objects.append(o)
    return o, '/' + o.name


off = None
on = None
try:
    # ---- without --allow_shared_memory: everything refused.
    off, off_ch, off_http, _ = start('off')
    obj, key = new_object(1 << 16)
    expect('without --allow_shared_memory: register, status and unregister are '
           'FAILED_PRECONDITION, naming the flag',
           code_of(lambda: register(off_ch, 'r', key, 1024)) == grpc.StatusCode.FAILED_PRECONDITION
           and code_of(lambda: status(off_ch)) == grpc.StatusCode.FAILED_PRECONDITION and
           code_of(lambda: unregister(off_ch)) == grpc.StatusCode.FAILED_PRECONDITION and
           '--allow_shared_memory' in detail_of(lambda: register(off_ch, 'r', key, 1024)))
    expect('without the flag: an infer naming a region is FAILED_PRECONDITION; HTTP register 400',
           code_of(lambda: call(off_ch, 'ModelInfer', infer_request(x, in_region='r'),
                                'ModelInferResponse', AUTH)) == grpc.StatusCode.FAILED_PRECONDITION
           and http(off_http, 'POST', '/v2/systemsharedmemory/region/r/register',
                    json.dumps({'key': key, 'byte_size': 1024}).encode(),
                    {'Authorization': f'Bearer {token}'})[0] == 400)
    expect('without the flag the server does not list the extension',
           'system_shared_memory' not in call(off_ch, 'ServerMetadata', M['ServerMetadataRequest'](),
                                              'ServerMetadataResponse').extensions)
    stop(off)
    off = None

    # ---- with the flag.
    on, ch, port_http, port_grpc = start('on', '--allow_shared_memory', '--max_shared_memory_regions', '6',
                              '--max_shared_memory_bytes', str(8 << 20))
    expect('ServerMetadata lists system_shared_memory',
           'system_shared_memory' in call(ch, 'ServerMetadata', M['ServerMetadataRequest'](),
                                          'ServerMetadataResponse').extensions)
    raw = call(ch, 'ModelInfer', infer_request(x), 'ModelInferResponse')
    raw_out = raw.raw_output_contents[0]
    in_obj, in_key = new_object(x.nbytes + 8192)
    out_obj, out_key = new_object(1 << 16)
    expect('registering without the token is UNAUTHENTICATED, with a wrong one PERMISSION_DENIED',
           code_of(lambda: register(ch, 'in', in_key, x.nbytes, metadata=None)) ==
           grpc.StatusCode.UNAUTHENTICATED and
           code_of(lambda: register(ch, 'in', in_key, x.nbytes,
                                    metadata=[('authorization', 'Bearer wrong')])) ==
           grpc.StatusCode.PERMISSION_DENIED)
    register(ch, 'in', in_key, x.nbytes + 8192)
    register(ch, 'out', out_key, 1 << 16)
    expect('SystemSharedMemoryStatus lists each region as registered (name, key, offset, size)',
           status(ch) == {'in': ('in', in_key, 0, x.nbytes + 8192),
                          'out': ('out', out_key, 0, 1 << 16)} and
           status(ch, 'in') == {'in': ('in', in_key, 0, x.nbytes + 8192)} and
           code_of(lambda: status(ch, 'nope')) == grpc.StatusCode.NOT_FOUND, str(status(ch)))

    in_obj.buf[:x.nbytes] = x.tobytes()
    r = call(ch, 'ModelInfer', infer_request(x, 'in', out_region='out', out_size=1 << 16, id_='s1'),
             'ModelInferResponse', AUTH)
    o = r.outputs[0]
    n = o.parameters['shared_memory_byte_size'].int64_param
    expect('an input read from a region and the output written to one: equal to the raw path '
           'bit for bit; the output names its region and size and carries no raw contents',
           n == len(raw_out) and bytes(out_obj.buf[:n]) == raw_out and
           o.parameters['shared_memory_region'].string_param == 'out' and
           len(r.raw_output_contents) == 0 and list(o.shape) == list(raw.outputs[0].shape) and
           r.id == 's1', f'{n} vs {len(raw_out)}, {len(r.raw_output_contents)} raw')
    expect('shared memory inference without the token is UNAUTHENTICATED',
           code_of(lambda: call(ch, 'ModelInfer', infer_request(x, 'in'), 'ModelInferResponse')) ==
           grpc.StatusCode.UNAUTHENTICATED)

    # Offsets: a region that starts 4096 bytes into its object, a tensor 128 bytes into it.
    off_obj, off_key = new_object(4096 + x.nbytes + 1024)
    off_obj.buf[4096 + 128:4096 + 128 + x.nbytes] = (x * 2).tobytes()
    register(ch, 'in-off', off_key, x.nbytes + 1024, offset=4096)
    raw2 = call(ch, 'ModelInfer', infer_request(x * 2), 'ModelInferResponse').raw_output_contents[0]
    out_obj.buf[:] = b'\0' * len(out_obj.buf)
    r = call(ch, 'ModelInfer', infer_request(x, 'in-off', in_offset=128, out_region='out',
                                             out_size=4096, out_offset=1000),
             'ModelInferResponse', AUTH)
    expect('region offset 4096 + tensor offset 128 in, output at offset 1000 of its region: '
           'equal to the raw path, nothing written before it',
           bytes(out_obj.buf[1000:1000 + len(raw2)]) == raw2 and
           bytes(out_obj.buf[:1000]) == b'\0' * 1000 and
           r.outputs[0].parameters['shared_memory_offset'].int64_param == 1000)
    out_obj.buf[:] = b'\0' * len(out_obj.buf)
    r = call(ch, 'ModelInfer', infer_request(x, 'in', out_region=None), 'ModelInferResponse', AUTH)
    expect('an input from shared memory with the output answered raw: equal to the raw path',
           r.raw_output_contents[0] == raw_out)

    # Over HTTP.
    hdr = {'Authorization': f'Bearer {token}'}
    st, _ = http(port_http, 'POST', '/v2/systemsharedmemory/region/http-out/register',
                 json.dumps({'key': out_key, 'byte_size': 1 << 15, 'offset': 0}).encode(), hdr)
    st_status, regions = http(port_http, 'GET', '/v2/systemsharedmemory/region/http-out/status',
                              headers=hdr)
    expect('HTTP register and status of one region',
           st == 200 and st_status == 200 and
           regions == [{'name': 'http-out', 'key': out_key, 'offset': 0, 'byte_size': 1 << 15}],
           f'{st} {st_status} {regions}')
    body = {'inputs': [{'name': 'input', 'datatype': 'FP32', 'shape': list(x.shape),
                        'parameters': {'shared_memory_region': 'in',
                                       'shared_memory_byte_size': x.nbytes}}],
            'outputs': [{'name': 'output',
                         'parameters': {'shared_memory_region': 'http-out',
                                        'shared_memory_byte_size': 1 << 15}}]}
    st, reply = http(port_http, 'POST', '/v2/models/tiny/infer', json.dumps(body).encode(), hdr)
    out_json = reply['outputs'][0] if st == 200 else {}
    expect('HTTP infer with shared memory in and out: the output names its region, has no data, '
           'and the region holds the raw path\'s output',
           st == 200 and 'data' not in out_json and
           out_json['parameters']['shared_memory_region'] == 'http-out' and
           out_json['parameters']['shared_memory_byte_size'] == len(raw_out) and
           bytes(out_obj.buf[:len(raw_out)]) == raw_out, str(reply)[:300])
    st, _ = http(port_http, 'POST', '/v2/models/tiny/infer', json.dumps(body).encode())
    expect('HTTP shared memory infer without the token: 401', st == 401, str(st))
    st, _ = http(port_http, 'POST', '/v2/systemsharedmemory/region/http-out/unregister',
                 headers=hdr)
    expect('HTTP unregister of one region', st == 200 and 'http-out' not in status(ch))

    # In a stream: the caller's token goes along.
    stream = ch.stream_stream('/inference.GRPCInferenceService/ModelStreamInfer',
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=M['ModelStreamInferResponse'].FromString)
    answers = list(stream(iter([infer_request(x, 'in', id_=f's{i}') for i in range(3)]),
                          timeout=60, metadata=AUTH))
    want = np.frombuffer(raw_out, np.float32)

    def same(a):  # stream requests may share a batch: equal up to another batch size's rounding
        got = np.frombuffer(b''.join(a.infer_response.raw_output_contents), np.float32)
        return got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-6)
    expect('ModelStreamInfer with a shared memory input: 3 answers equal to the raw path',
           len(answers) == 3 and all(not a.error_message and same(a) for a in answers),
           str([(a.error_message, len(a.infer_response.raw_output_contents)) for a in answers]))

    # Hostile registrations.
    small, small_key = new_object(4096)
    checks = {
        'past the object\'s end': (lambda: register(ch, 'h1', small_key, 4097),
                                   grpc.StatusCode.INVALID_ARGUMENT),
        'offset + size wrapping 64 bits': (lambda: register(ch, 'h2', small_key, 2**64 - 16,
                                                            offset=4096),
                                           grpc.StatusCode.INVALID_ARGUMENT),
        'a path-like key': (lambda: register(ch, 'h3', '/../../etc/passwd', 16),
                            grpc.StatusCode.INVALID_ARGUMENT),
        'a key without its slash': (lambda: register(ch, 'h3', small_key[1:], 16),
                                    grpc.StatusCode.INVALID_ARGUMENT),
        'no such object': (lambda: register(ch, 'h4', '/modelserver-no-such-object', 16),
                           grpc.StatusCode.NOT_FOUND),
        'a name in use': (lambda: register(ch, 'in', small_key, 16), grpc.StatusCode.ALREADY_EXISTS),
        'a bad name': (lambda: register(ch, 'a/b', small_key, 16), grpc.StatusCode.INVALID_ARGUMENT),
        'size 0': (lambda: register(ch, 'h5', small_key, 0), grpc.StatusCode.INVALID_ARGUMENT),
    }
    for what, (fn, want) in checks.items():
        got = code_of(fn)
        expect(f'register {what}: {want.name}', got == want, f'{got}: {detail_of(fn)}')
    secret = os.path.join(work, 'secret.txt')
    with open(secret, 'w') as f:
        f.write('do not read me\n' * 100)
    link = '/dev/shm/modelserver-test-link-%d' % os.getpid()
    os.symlink(secret, link)
    try:
        got = code_of(lambda: register(ch, 'h6', '/' + os.path.basename(link), 16))
    finally:
        os.unlink(link)
    expect('register a /dev/shm symlink to a file elsewhere: refused (shm_open does not follow '
           'links)', got == grpc.StatusCode.INVALID_ARGUMENT, str(got))
    expect('none of the refused registrations is listed', set(status(ch)) == {'in', 'out', 'in-off'},
           str(status(ch)))
    big, big_key = new_object(8 << 20)
    expect('registered bytes past --max_shared_memory_bytes: RESOURCE_EXHAUSTED',
           code_of(lambda: register(ch, 'big', big_key, 8 << 20)) ==
           grpc.StatusCode.RESOURCE_EXHAUSTED)
    for i in range(3):
        register(ch, f'more{i}', small_key, 16)
    expect('a 7th region past --max_shared_memory_regions 6: RESOURCE_EXHAUSTED',
           code_of(lambda: register(ch, 'more3', small_key, 16)) ==
           grpc.StatusCode.RESOURCE_EXHAUSTED)

    # Hostile tensor windows.
    windows = {
        'a tensor offset past the region': infer_request(x, 'in', in_offset=8192 + 8),
        'a byte size past the region': infer_request(x, 'in', in_size=x.nbytes + 8193),
        'a byte size that does not fit the shape': infer_request(x, 'in', in_size=x.nbytes - 4),
        'a negative byte size': infer_request(x, 'in', in_size=-1),
        'an output window too small': infer_request(x, 'in', out_region='out', out_size=8),
        'an output window past its region': infer_request(x, 'in', out_region='more0',
                                                          out_size=4096),
    }
    for what, req in windows.items():
        fn = (lambda q: lambda: call(ch, 'ModelInfer', q, 'ModelInferResponse', AUTH))(req)
        got = code_of(fn)
        expect(f'infer with {what}: INVALID_ARGUMENT', got == grpc.StatusCode.INVALID_ARGUMENT,
               f'{got}: {detail_of(fn)}')
    fn = lambda: call(ch, 'ModelInfer', infer_request(x, 'nope'), 'ModelInferResponse', AUTH)
    expect('infer naming an unknown region: NOT_FOUND', code_of(fn) == grpc.StatusCode.NOT_FOUND,
           detail_of(fn))

    # A client shrinks its object after registering it: a mapping server would die of SIGBUS.
    os.ftruncate(in_obj._fd, 64)
    fn = lambda: call(ch, 'ModelInfer', infer_request(x, 'in'), 'ModelInferResponse', AUTH)
    got, why = code_of(fn), detail_of(fn)
    os.ftruncate(out_obj._fd, 16)  # (in-off lives in another object, still whole)
    fn2 = lambda: call(ch, 'ModelInfer', infer_request(x * 2, 'in-off', in_offset=128,
                                                       out_region='out', out_size=4096),
                       'ModelInferResponse', AUTH)
    got2 = code_of(fn2)
    expect('objects shrunk after registration: INVALID_ARGUMENT naming it, in and out; the server '
           'is up and serving',
           got == grpc.StatusCode.INVALID_ARGUMENT and 'shrunk' in why and
           got2 == grpc.StatusCode.INVALID_ARGUMENT and on.poll() is None and
           call(ch, 'ModelInfer', infer_request(x), 'ModelInferResponse').raw_output_contents[0] ==
           raw_out, f'{got} {why} / {got2} {detail_of(fn2)}')

    unregister(ch)
    expect('unregister with no name: every region; later inference naming one is NOT_FOUND',
           status(ch) == {} and code_of(lambda: call(ch, 'ModelInfer', infer_request(x, 'in'),
                                                     'ModelInferResponse', AUTH)) ==
           grpc.StatusCode.NOT_FOUND)

    # The load generator through shared memory.
    bench = subprocess.run([client_bin, '--target', f'127.0.0.1:{port_grpc}', '--token', token,
                            'bench', 'tiny',
                            '--shape', '3,32,32', '--concurrency', '2', '--duration', '1s',
                            '--warmup', '0s', '--shared_memory', 'system'],
                           capture_output=True, text=True, timeout=120)
    rows = [line.split() for line in bench.stdout.splitlines() if line.strip().startswith('2 ')]
    leftovers = [f for f in os.listdir('/dev/shm') if f.startswith('model-client-')]
    expect('model-client bench --shared_memory system: requests answered, no errors, its '
           'regions unregistered and its objects removed afterwards',
           bench.returncode == 0 and 'through system shared memory' in bench.stdout and
           rows and float(rows[0][1]) > 0 and status(ch) == {} and not leftovers,
           f'{bench.returncode} {bench.stdout[-600:]} {bench.stderr[-600:]} {leftovers}')
finally:
    for p in (off, on):
        if p is not None:
            stop(p)
    for o in objects:
        try:
            o.close()
            o.unlink()
        except Exception:  # noqa: BLE001 - already gone
            pass
rc = summary()
if rc:
    for name in ('off', 'on'):
        path = os.path.join(work, f'{name}.log')
        if os.path.exists(path):
            print(f'--- {name}.log', open(path).read()[-3000:])
sys.exit(rc)
