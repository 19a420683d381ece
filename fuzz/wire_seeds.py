#!/usr/bin/env python3
"""Seeds for fuzz/wire_fuzzer.cc, in its framing (first byte = parser), from what the
tests send: REST bodies (JSON, nested and flat, typed, base64 images, the binary-data
extension, the hostile ones of oip_test and front_door_test), ModelInferRequests (raw
and typed contents, BYTES, classification), PredictResponses, Predict tensors, paths, a worker's forward and save replies.
Usage: wire_seeds.py OUT_DIR BUILD_DIR"""
import base64
import json
import os
import struct
import sys

out, build = sys.argv[1:3]
sys.path.insert(0, os.path.join(build, 'clients', 'python'))
from inference.v2 import grpc_predict_v2_pb2 as v2  # noqa: E402
from modelserving.v1 import model_service_pb2 as v1  # noqa: E402

os.makedirs(out, exist_ok=True)
seeds = {}


def rest(name, body, header_length=None):
    head = b'' if header_length is None else str(header_length).encode()
    seeds['rest_' + name] = b'\x00' + head + b'\n' + body


x = [[[[0.5, -1.0], [2.0, 0.0]]]]
for dt, data in (('FP32', x), ('FP64', [1.5, 2.5]), ('INT8', [1, -2, 127]), ('UINT8', [0, 255]),
                 ('INT32', [7]), ('INT64', [1 << 40]), ('BOOL', [True, False]),
                 ('FP16', [0.25]), ('BF16', [1.0]), ('INT8', [300])):
    shape = [1, 1, 2, 2] if data is x else [len(data)]
    rest(f'typed_{dt}', json.dumps({'id': 'a', 'inputs': [{'name': 'input', 'datatype': dt,
                                                          'shape': shape, 'data': data}],
                                   'outputs': [{'name': 'output',
                                                'parameters': {'classification': 2}}]}).encode())
rest('bytes', json.dumps({'inputs': [{'name': 'input', 'datatype': 'BYTES', 'shape': [1],
                                      'data': [base64.b64encode(b'\xff\xd8\xff').decode()]}]}).encode())
for size in (16, -1, 1 << 63, (1 << 64) - 1):
    head = json.dumps({'inputs': [{'name': 'input', 'datatype': 'FP32', 'shape': [4],
                                   'parameters': {'binary_data_size': size}}],
                       'parameters': {'binary_data_output': True}}).encode()
    rest(f'binary_{size}', head + b'\0' * 16, len(head))
rest('deep', b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": ' +
     b'[' * 40 + b'1' + b']' * 40 + b'}]}')
rest('header_past_body', b'{"inputs": []}', 99)

r = v2.ModelInferRequest(model_name='tiny', id='x')
t = r.inputs.add(name='input', datatype='FP32', shape=[1, 3, 2, 2])
r.raw_input_contents.append(b'\0' * 48)
seeds['infer_raw'] = b'\x01' + r.SerializeToString()
typed = v2.ModelInferRequest(model_name='tiny')
t = typed.inputs.add(name='input', datatype='INT8', shape=[3])
t.contents.int_contents.extend([1, -1, 300])
o = typed.outputs.add(name='output')
o.parameters['classification'].int64_param = 3
seeds['infer_typed'] = b'\x01' + typed.SerializeToString()
images = v2.ModelInferRequest(model_name='tiny')
images.inputs.add(name='input', datatype='BYTES', shape=[2])
images.raw_input_contents.append(struct.pack('<I', 3) + b'abc' + struct.pack('<I', 9) + b'x')
seeds['infer_bytes'] = b'\x01' + images.SerializeToString()

# Shared memory (the fuzzer's regions "r" and "s"): an input read from one, the
# output asked into the other; REST's JSON form of the same.
shm = v2.ModelInferRequest(model_name='tiny')
t = shm.inputs.add(name='input', datatype='FP32', shape=[1, 3, 2, 2])
t.parameters['shared_memory_region'].string_param = 'r'
t.parameters['shared_memory_byte_size'].int64_param = 48
t.parameters['shared_memory_offset'].uint64_param = 16
o = shm.outputs.add(name='output')
o.parameters['shared_memory_region'].string_param = 's'
o.parameters['shared_memory_byte_size'].int64_param = 4096
seeds['infer_shm'] = b'\x01' + shm.SerializeToString()
rest('shm', json.dumps({'inputs': [{'name': 'input', 'datatype': 'FP32', 'shape': [1, 3, 2, 2],
                                    'parameters': {'shared_memory_region': 'r',
                                                   'shared_memory_byte_size': 48}}],
                        'outputs': [{'name': 'output',
                                     'parameters': {'shared_memory_region': 's',
                                                    'shared_memory_byte_size': 4096,
                                                    'shared_memory_offset': 8}}]}).encode())

p = v1.PredictResponse(model_name='tiny', version=1)
p.output.shape.extend([2, 3])
p.output.dtype = v1.FLOAT32
p.output.data = struct.pack('<6f', *range(6))
for row in range(2):
    k = p.top_k.add()
    k.classes.add(index=2, probability=0.5, label='two')
req = typed.SerializeToString()
seeds['predict_to_infer'] = b'\x02' + struct.pack('>H', len(req)) + req + p.SerializeToString()
shm_req = shm.SerializeToString()
seeds['predict_to_infer_shm'] = (b'\x02' + struct.pack('>H', len(shm_req)) + shm_req +
                                 p.SerializeToString())
seeds['tensor'] = b'\x03' + p.output.SerializeToString()
big = v1.Tensor(dtype=v1.FLOAT32, shape=[1 << 40, 1 << 40])
seeds['tensor_overflow'] = b'\x03' + big.SerializeToString()
for i, path in enumerate(('GET /v2/models/tiny/ready', 'POST /v2/models/tiny/versions/3/infer',
                          'GET /metrics', 'DELETE /v2/models/a%2F/ready')):
    seeds[f'route_{i}'] = b'\x04' + path.encode()


def worker_reply(what, outputs, code, payload, nbytes=None):
    """outputs: (name, dtype, shape, bytes) per output."""
    n = len(payload) if nbytes is None else nbytes
    body = b''
    for name, dtype, shape, size in outputs:
        body += (bytes([dtype, len(shape)]) + struct.pack('<Q', size) + bytes([len(name)]) +
                 name + b''.join(struct.pack('<q', d) for d in shape))
    return bytes([5, what, len(outputs)]) + struct.pack('<iQ', code, n) + body + payload


seeds['worker_forward'] = worker_reply(0, [(b'output', 1, [2, 3], 24)], 0, bytes(24))
seeds['worker_forward_two'] = worker_reply(
    0, [(b'output0', 1, [2, 3], 24), (b'scores.1', 8, [2], 16)], 0, bytes(40))
seeds['worker_forward_error'] = worker_reply(0, [(b'output', 1, [2, 3], 24)], 8, b'')
seeds['worker_forward_oversized'] = worker_reply(
    0, [(b'output', 1, [1 << 20, 1 << 20], 1 << 42)], 0, b'', 1 << 42)
seeds['worker_save'] = worker_reply(1, [], 0, b'PK\x05\x06' + bytes(18))
for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)
print(f'{len(seeds)} wire seeds')
