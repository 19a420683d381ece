#!/usr/bin/env python3
"""Triton's model configuration and statistics extensions, spoken by a client built from
the protocol's field numbers (tests/testing/oip_messages.py), over gRPC and HTTP, on the
real server: ModelConfig fields equal what the model is (max batch size, input and
output dims without the batch dimension, dtypes, the batching delay, instance groups =
batch workers, the label file, the default file name, the version policy); statistics
rise by exactly the samples and batches sent (success count, queue and compute
durations > 0, one batch_stats entry per batch size seen), for one version, for every
model, and unknown models are NOT_FOUND / 404; ModelStreamInfer: 100 requests in order
with their ids, a bad one in the middle answered with error_message while the rest
succeed; POST /v2/repository/index with the bodies tritonclient sends. perf_analyzer reads these before and after a run.
Usage: triton_test.py SERVER_BIN FIXTURES TMP
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import grpc
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'testing'))
from checks import expect, stop, summary  # noqa: E402
from oip_messages import M, call  # noqa: E402

server_bin, fixtures, tmp_root = sys.argv[1:4]
os.makedirs(tmp_root, exist_ok=True)
work = os.path.abspath(tempfile.mkdtemp(prefix='triton-', dir=tmp_root))
store = os.path.join(work, 'store')
d = os.path.join(store, 'tiny', '1')
os.makedirs(d)
os.link(os.path.join(fixtures, 'tiny', 'model_weights.pth'), os.path.join(d, 'model_weights.pth'))
with open(os.path.join(d, 'labels.txt'), 'w') as f:
    f.write(''.join(f'class {i}\n' for i in range(10)))
arch = open(os.path.join(fixtures, 'tiny', 'arch.txt')).read().strip()
ports = {k: os.path.join(work, k) for k in ('grpc', 'http')}
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
log_path = os.path.join(work, 'log')
proc = subprocess.Popen([server_bin, '--store', store, '--model', f'tiny={arch}',
                         '--listen', '127.0.0.1:0', '--port_file', ports['grpc'],
                         '--http_listen', '127.0.0.1:0', '--http_port_file', ports['http'],
                         '--metrics_listen', '', '--max_batch_size', '4', '--batch_workers', '3',
                         '--batch_timeout_us', '1500'],
                        stdout=subprocess.DEVNULL, stderr=open(log_path, 'w'), env=env)


def http(method, path, body=None):
    req = urllib.request.Request(f'http://127.0.0.1:{port["http"]}{path}', data=body,
                                 method=method, headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b'null')
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b'null')


def code_of(fn):
    try:
        fn()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def stats(version=''):
    r = call(ch, 'ModelStatistics', M['ModelStatisticsRequest'](name='tiny', version=version),
             'ModelStatisticsResponse')
    return {m.version: m for m in r.model_stats}


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
    x = np.load(os.path.join(fixtures, 'tiny', 'input.npy')).astype(np.float32)  # [4,3,32,32]

    cfg = call(ch, 'ModelConfig', M['ModelConfigRequest'](name='tiny'), 'ModelConfigResponse').config
    TYPE_FP32, KIND_CPU = 11, 2
    expect('ModelConfig: name, platform, backend, max_batch_size, version policy, file',
           cfg.name == 'tiny' and cfg.platform == 'pytorch_libtorch' and cfg.backend == 'pytorch' and
           cfg.max_batch_size == 4 and cfg.version_policy.latest.num_versions == 1 and
           cfg.default_model_filename == 'model_weights.pth', str(cfg))
    expect('ModelConfig: input [3,-1,-1] FP32 and output [-1] FP32 without the batch dimension, '
           'the label file', len(cfg.input) == 1 and list(cfg.input[0].dims) == [3, -1, -1] and
           cfg.input[0].data_type == TYPE_FP32 and len(cfg.output) == 1 and
           list(cfg.output[0].dims) == [-1] and cfg.output[0].data_type == TYPE_FP32 and
           cfg.output[0].label_filename == 'labels.txt', str(cfg))
    expect('ModelConfig: dynamic batching (preferred 4, 1500 us) and one CPU instance group of '
           '3 (the batch workers)',
           list(cfg.dynamic_batching.preferred_batch_size) == [4] and
           cfg.dynamic_batching.max_queue_delay_microseconds == 1500 and
           len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 3 and
           cfg.instance_group[0].kind == KIND_CPU, str(cfg))
    expect('ModelConfig of an unknown model or version: NOT_FOUND',
           code_of(lambda: call(ch, 'ModelConfig', M['ModelConfigRequest'](name='nope'),
                                'ModelConfigResponse')) == grpc.StatusCode.NOT_FOUND and
           code_of(lambda: call(ch, 'ModelConfig', M['ModelConfigRequest'](name='tiny', version='9'),
                                'ModelConfigResponse')) == grpc.StatusCode.NOT_FOUND)
    st, body = http('GET', '/v2/models/tiny/config')
    stv, bodyv = http('GET', '/v2/models/tiny/versions/1/config')
    expect('GET /v2/models/tiny[/versions/1]/config: the same, as Triton writes it',
           st == 200 and stv == 200 and body == bodyv and body['max_batch_size'] == 4 and
           body['input'][0]['dims'] == [3, -1, -1] and body['input'][0]['data_type'] == 'TYPE_FP32' and
           body['instance_group'][0]['kind'] == 'KIND_CPU' and
           body['dynamic_batching']['max_queue_delay_microseconds'] == 1500, str(body))
    expect('GET /v2/models/nope/config -> 404', http('GET', '/v2/models/nope/config')[0] == 404)

    # Statistics: 5 requests of one sample, one at a time (5 batches of 1), then one of 3.
    before = stats().get('1')
    base = (before.inference_count, before.execution_count, before.inference_stats.success.count)
    for i in range(5):
        r = M['ModelInferRequest'](model_name='tiny')
        r.inputs.add(name='input', datatype='FP32', shape=[1, 3, 32, 32])
        r.raw_input_contents.append(x[i % 4:i % 4 + 1].tobytes())
        call(ch, 'ModelInfer', r, 'ModelInferResponse')
    r = M['ModelInferRequest'](model_name='tiny')
    r.inputs.add(name='input', datatype='FP32', shape=[3, 3, 32, 32])
    r.raw_input_contents.append(x[:3].tobytes())
    call(ch, 'ModelInfer', r, 'ModelInferResponse')
    after = stats()['1']
    s = after.inference_stats
    expect('ModelStatistics: inference_count +8 samples, execution_count +6 batches, success +6',
           (after.inference_count - base[0], after.execution_count - base[1],
            s.success.count - base[2]) == (8, 6, 6),
           f'{base} -> {after.inference_count}, {after.execution_count}, {s.success.count}')
    expect('ModelStatistics: queue and compute durations > 0, last_inference is now',
           s.queue.ns > 0 and s.compute_infer.ns > 0 and s.compute_input.count == s.success.count and
           s.success.ns >= s.compute_infer.ns and
           abs(after.last_inference / 1000 - time.time()) < 60, str(s))
    sizes = {b.batch_size: b for b in after.batch_stats}
    expect('ModelStatistics: one batch_stats entry per batch size seen (1 and 3)',
           set(sizes) == {1, 3} and sizes[1].compute_infer.count == 5 and
           sizes[3].compute_infer.count == 1 and sizes[3].compute_infer.ns > 0,
           str(after.batch_stats))
    every = call(ch, 'ModelStatistics', M['ModelStatisticsRequest'](), 'ModelStatisticsResponse')
    expect('ModelStatistics with no name: every model', [m.name for m in every.model_stats] == ['tiny'])
    expect('ModelStatistics of an unknown model: NOT_FOUND; of an unrecorded version: none',
           code_of(lambda: call(ch, 'ModelStatistics', M['ModelStatisticsRequest'](name='nope'),
                                'ModelStatisticsResponse')) == grpc.StatusCode.NOT_FOUND and
           stats('7') == {})
    st, body = http('GET', '/v2/models/tiny/stats')
    st_all, body_all = http('GET', '/v2/models/stats')
    ms = body['model_stats'][0] if st == 200 and body['model_stats'] else {}
    expect('GET /v2/models/tiny/stats and /v2/models/stats: the same numbers as JSON',
           st == 200 and st_all == 200 and ms.get('inference_count') == after.inference_count and
           ms['execution_count'] == after.execution_count and
           ms['inference_stats']['success']['count'] == s.success.count and
           sorted(b['batch_size'] for b in ms['batch_stats']) == [1, 3] and
           body_all['model_stats'][0]['name'] == 'tiny', str(body)[:300])
    expect('GET /v2/models/nope/stats -> 404', http('GET', '/v2/models/nope/stats')[0] == 404)

    # ModelStreamInfer: 100 requests on one stream, the 50th for an unknown model.
    def stream_request(i):
        r = M['ModelInferRequest'](model_name='nope' if i == 50 else 'tiny', id=f'req-{i}')
        r.inputs.add(name='input', datatype='FP32', shape=[1, 3, 32, 32])
        r.raw_input_contents.append(x[i % 4:i % 4 + 1].tobytes())
        return r
    unary = {}
    for i in range(4):
        out = call(ch, 'ModelInfer', stream_request(i), 'ModelInferResponse')
        unary[i] = out.raw_output_contents[0]
    stream = ch.stream_stream('/inference.GRPCInferenceService/ModelStreamInfer',
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=M['ModelStreamInferResponse'].FromString)
    answers = list(stream(iter([stream_request(i) for i in range(100)]), timeout=120))
    ids = [a.infer_response.id for a in answers]
    bad = [i for i, a in enumerate(answers) if a.error_message]
    # (Stream requests share batches: equal up to the float rounding of another batch size.)
    same = all(np.allclose(np.frombuffer(answers[i].infer_response.raw_output_contents[0], np.float32),
                           np.frombuffer(unary[i % 4], np.float32), rtol=1e-5, atol=1e-6)
               for i in range(100) if i != 50)
    expect('ModelStreamInfer: 100 requests answered in order with their ids; the bad one '
           '(unknown model) answered with error_message, the stream goes on; outputs equal '
           'the unary ones',
           len(answers) == 100 and ids == [f'req-{i}' for i in range(100)] and bad == [50] and
           'nope' in answers[50].error_message and same,
           f'{len(answers)} answers, errors at {bad} ({answers[50].error_message}), same={same}')
    after_stream = stats()['1']
    expect('the stream\'s requests count in the statistics like unary ones (+103 samples)',
           after_stream.inference_count - after.inference_count == 103,
           f'{after.inference_count} -> {after_stream.inference_count}')

    # The bodies tritonclient's HTTP client sends to the repository index.
    codes = [http('POST', '/v2/repository/index', b)[0] for b in (b'{}', b'{"ready": true}', b'')]
    st, index = http('POST', '/v2/repository/index', b'{"ready": true}')
    expect('POST /v2/repository/index with {}, {"ready": true} and no body -> 200',
           codes == [200, 200, 200] and index[0]['name'] == 'tiny' and index[0]['state'] == 'READY',
           f'{codes} {index}')
finally:
    stop(proc)
rc = summary()
if rc:
    print(open(log_path).read()[-3000:])
sys.exit(rc)
