#!/usr/bin/env python3
"""Every gRPC service through server reflection with `buf curl` (npm's @bufbuild/buf,
the grpcurl stand-in; installed by scripts/setup.sh): list the services and methods,
then call a method of each one -- which needs its descriptors from reflection --
health included. Exits 77 (skipped, saying why) when buf is missing.
Usage: buf_curl_test.py SERVER_BIN BUF_BIN FIXTURES TMP
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'testing'))
from checks import expect, stop, summary  # noqa: E402

server_bin, buf, fixtures, tmp_root = sys.argv[1:5]
if not os.access(buf, os.X_OK):
    print(f'SKIP: buf not found at {buf!r} (scripts/setup.sh installs it with npm)')
    sys.exit(77)
os.makedirs(tmp_root, exist_ok=True)
work = tempfile.mkdtemp(prefix='bufcurl-', dir=tmp_root)
store = os.path.join(work, 'store')
os.makedirs(os.path.join(store, 'tiny', '1'))
os.link(os.path.join(fixtures, 'tiny', 'model_weights.pth'),
        os.path.join(store, 'tiny', '1', 'model_weights.pth'))
arch = open(os.path.join(fixtures, 'tiny', 'arch.txt')).read().strip()
port_file = os.path.join(work, 'port')
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
proc = subprocess.Popen([server_bin, '--store', store, '--model', f'tiny={arch}', '--listen',
                         '127.0.0.1:0', '--port_file', port_file, '--metrics_listen', '',
                         '--http_listen', ''],
                        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, 'log'), 'w'))


def curl(*args, data=None):
    cmd = [buf, 'curl', '--protocol', 'grpc', '--http2-prior-knowledge', *args]
    if data is not None:
        cmd[2:2] = ['-d', json.dumps(data)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    return r.returncode, r.stdout, r.stderr


try:
    for _ in range(300):
        if os.path.exists(port_file):
            break
        time.sleep(0.1)
    url = 'http://127.0.0.1:' + open(port_file).read().strip()
    for _ in range(300):  # tiny READY
        rc, out, _ = curl(url + '/grpc.health.v1.Health/Check',
                          data={'service': 'modelserving.v1.ModelService'})
        if rc == 0 and 'NOT_SERVING' not in out:
            break
        time.sleep(0.1)
    rc, out, err = curl('--list-services', url)
    services = set(out.split())
    expect('--list-services lists every service', rc == 0 and services >= {
        'modelserving.v1.ModelService', 'inference.GRPCInferenceService',
        'grpc.health.v1.Health', 'grpc.reflection.v1alpha.ServerReflection'}, out + err)
    rc, out, err = curl('--list-methods', url)
    methods = set(out.split())
    expect('--list-methods describes them', rc == 0 and {
        'modelserving.v1.ModelService/Predict', 'modelserving.v1.ModelService/GetModelStatus',
        'inference.GRPCInferenceService/ModelInfer', 'grpc.health.v1.Health/Check'} <= methods,
        out + err)
    calls = [
        ('grpc.health.v1.Health/Check', {'service': 'modelserving.v1.ModelService'},
         lambda r: r.get('status') == 'SERVING'),
        ('grpc.health.v1.Health/Check', {'service': 'tiny'}, lambda r: r.get('status') == 'SERVING'),
        ('modelserving.v1.ModelService/GetModelStatus', {'model_name': 'tiny'},
         lambda r: r.get('state') == 'READY' and r.get('servingVersion') == '1'),
        ('modelserving.v1.ModelService/ListModels', {},
         lambda r: [m['modelName'] for m in r.get('models', [])] == ['tiny']),
        ('inference.GRPCInferenceService/ServerReady', {}, lambda r: r.get('ready') is True),
        ('inference.GRPCInferenceService/ModelMetadata', {'name': 'tiny'},
         lambda r: r.get('platform') == 'pytorch_libtorch'),
    ]
    for method, data, ok in calls:
        rc, out, err = curl(f'{url}/{method}', data=data)
        try:
            reply = json.loads(out) if rc == 0 else {}
        except ValueError:
            reply = {}
        expect(f'buf curl {method}', rc == 0 and ok(reply), out + err)
    rc, out, err = curl(f'{url}/modelserving.v1.ModelService/GetModelStatus',
                        data={'model_name': 'nope'})
    expect('errors come back with their gRPC code', rc != 0 and 'not_found' in (out + err).lower(),
           out + err)
finally:
    stop(proc)
sys.exit(summary(work))
