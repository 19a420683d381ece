#!/usr/bin/env python3
"""Images in, labels out: PredictRequest.images against torchvision, through the Python
client package (clients/python), the Open Inference Protocol (gRPC BYTES and REST base64),
and model-client --image.

Fixtures are written at test time: Debian's python3-skimage photos re-encoded by PIL (JPEG,
PNG, WebP, all eight EXIF orientations), bad images, a TorchScript identity (so the server's
preprocessed tensor comes back as its output), the VGG16 state dict fixture with a
1000-line labels.txt, and the CIFAR-10 tutorial net uploaded with its own preprocessing.
References are torchvision's transforms on the PIL image (after ImageOps.exif_transpose).
Usage: image_test.py SERVER_BIN CLIENT_BIN FIXTURES SOURCE_DIR PYCLIENT_DIR TMP
"""
import base64
import concurrent.futures
import glob
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image, ImageOps

server_bin, client_bin, fixtures, source_dir, pyclient_dir, tmp_root = sys.argv[1:7]
sys.path.insert(0, os.path.join(source_dir, 'tests', 'testing'))
sys.path.insert(0, pyclient_dir)
from checks import code_of, expect, stop, summary  # noqa: E402
from modelserver_client import ModelServerClient, ServerError  # noqa: E402
from template_models import CifarNet  # noqa: E402
from inference.v2 import grpc_predict_v2_pb2 as v2  # noqa: E402
from modelserving.v1 import model_service_pb2 as pb  # noqa: E402
from inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

os.makedirs(tmp_root, exist_ok=True)
work = tempfile.mkdtemp(prefix='image-', dir=tmp_root)
fx = os.path.join(work, 'fx')
subprocess.run([sys.executable, os.path.join(source_dir, 'tests', 'testing', 'image_fixtures.py'),
                fx], check=True)
IMAGES = sorted(glob.glob(os.path.join(fx, 'images', '*')))
BAD = os.path.join(fx, 'bad')

store = os.path.join(work, 'store')
for name, src, dst in (('ident', os.path.join(fx, 'ident', 'model.pt'), 'model.pt'),
                       ('vgg16', os.path.join(fixtures, 'vgg16', 'model_weights.pth'),
                        'model_weights.pth')):
    os.makedirs(os.path.join(store, name, '1'))
    os.link(src, os.path.join(store, name, '1', dst))
LABELS = [f'class_{i}' for i in range(1000)]
with open(os.path.join(store, 'vgg16', '1', 'labels.txt'), 'w') as f:
    f.write('\n'.join(LABELS) + '\n')

env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
ports = {k: os.path.join(work, k) for k in ('grpc', 'metrics', 'http')}
proc = subprocess.Popen([server_bin, '--store', store, '--model', 'ident', '--model',
                         'vgg16=vgg16', '--listen', '127.0.0.1:0', '--port_file', ports['grpc'],
                         '--metrics_listen', '127.0.0.1:0', '--metrics_port_file', ports['metrics'],
                         '--http_listen', '127.0.0.1:0', '--http_port_file', ports['http']],
                        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, 'log'), 'w'),
                        env=env)

IMAGENET = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def pil(path):
    return ImageOps.exif_transpose(Image.open(path)).convert('RGB')


def rel_l2(a, b):
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def port(kind):
    for _ in range(600):
        if os.path.exists(ports[kind]) and open(ports[kind]).read().strip():
            return open(ports[kind]).read().strip()
        time.sleep(0.1)
    raise RuntimeError(f'no {kind} port')


try:
    target = '127.0.0.1:' + port('grpc')
    client = ModelServerClient(target, timeout=120)
    for _ in range(600):
        if all(client.status(m).state == pb.READY for m in ('ident', 'vgg16')):
            break
        time.sleep(0.2)

    # --- 1. the tensor the model gets equals torchvision's (identity model) ---
    worst_max, worst_mean, outputs = 0.0, 0.0, {}
    for path in IMAGES:
        out = client.predict_images('ident', path, top_k=0).output
        ref = IMAGENET(pil(path)).numpy()
        d = np.abs(out[0] - ref)
        outputs[os.path.basename(path)] = out[0]
        worst_max, worst_mean = max(worst_max, float(d.max())), max(worst_mean, float(d.mean()))
        expect(f'{os.path.basename(path)}: preprocessed tensor equals torchvision\'s',
               out.shape == (1, 3, 224, 224) and d.max() <= 0.03 and d.mean() <= 0.01,
               f'shape {out.shape} max {d.max():.4f} mean {d.mean():.5f}')
    print(f'preprocessing parity over {len(IMAGES)} images: max abs {worst_max:.4f}, '
          f'worst mean abs {worst_mean:.5f}')
    base = outputs['chelsea.jpg']
    for k in range(2, 9):  # the orientation was applied (not a no-op that matches by luck)
        expect(f'EXIF orientation {k} changes the input',
               np.abs(outputs[f'chelsea_exif{k}.jpg'] - base).mean() > 0.05)
    batch = client.predict_images('ident', IMAGES[:4], top_k=0).output
    expect('several images in one request: in order, each as alone',
           batch.shape == (4, 3, 224, 224) and all(
               np.array_equal(batch[i], outputs[os.path.basename(p)])
               for i, p in enumerate(IMAGES[:4])))

    # --- 2. the Python client's tensor path: float64 and torch.Tensor ---
    x64 = np.random.default_rng(0).random((2, 3, 8, 8))
    p = client.predict('ident', x64)
    expect('float64 numpy input converted (not refused)',
           p.output.dtype == np.float32 and np.abs(p.output - x64).max() < 1e-6)
    p = client.predict('ident', torch.arange(12.0).reshape(1, 3, 2, 2))
    expect('torch.Tensor input', np.array_equal(p.output.ravel(), np.arange(12.0)))

    # --- 3. VGG16 logits from images vs Python's on torchvision tensors; labels ---
    photos = [os.path.join(fx, 'images', n) for n in ('chelsea.jpg', 'coffee.png', 'rocket.jpg')]
    resp = client.predict_images('vgg16', photos, top_k=5)
    vgg = torchvision.models.vgg16()
    vgg.load_state_dict(torch.load(os.path.join(fixtures, 'vgg16', 'model_weights.pth')))
    vgg.eval()
    with torch.no_grad():
        ref = vgg(torch.stack([IMAGENET(pil(p)) for p in photos])).numpy()
    err = rel_l2(resp.output, ref)
    print(f'VGG16 logits from images vs Python: max relative L2 per row {err:.5f}')
    expect('VGG16 logits within 1% (relative L2 per row) of Python\'s', err <= 0.01, f'{err}')
    expect('top_k carries the labels of labels.txt',
           len(resp.top_k) == 3 and all(len(s) == 5 and all(c[2] == f'class_{c[0]}' for c in s)
                                        for s in resp.top_k), f'{resp.top_k}')
    expect('top-1 index is the argmax of the output',
           [s[0][0] for s in resp.top_k] == list(np.argmax(resp.output, axis=1)))

    # --- 4. bad images: INVALID_ARGUMENT naming the image and the problem ---
    good = open(photos[0], 'rb').read()
    for name, words in (('truncated.jpg', 'JPEG'), ('cut.jpg', 'truncated'), ('cmyk.jpg', 'CMYK'),
                        ('text.txt', 'not a JPEG, PNG or WebP'),
                        ('huge.png', 'over the limit of'), ('empty.png', 'empty')):
        try:
            client.predict_images('vgg16', [good, os.path.join(BAD, name)])
            expect(f'bad image {name} refused', False, 'accepted')
        except ServerError as e:
            expect(f'bad image {name}: INVALID_ARGUMENT "image 1: ... {words}"',
                   e.code.name == 'INVALID_ARGUMENT' and e.message.startswith('image 1: ')
                   and words in e.message, f'{e}')
    try:
        client.predict_images('ident', [good], top_k=0)  # the server is still up
        expect('the server serves after the bad images', True)
    except ServerError as e:
        expect('the server serves after the bad images', False, str(e))

    # --- 5. per-model preprocessing from the manifest (uploaded), and label counts ---
    tmpl = os.path.join(fixtures, 'tmpl_cifarnet')
    cifar_pre = {'resize': 36, 'crop': 32, 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5],
                 'interpolation': 'bicubic'}
    classes = ['plane', 'car', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    try:
        client.upload('cifar', os.path.join(tmpl, 'model_weights.pth'),
                      architecture_file=os.path.join(tmpl, 'architecture.pt'), labels=classes[:9],
                      preprocess=cifar_pre)
        expect('9 labels for 10 classes refused at upload', False, 'accepted')
    except ServerError as e:
        expect('9 labels for 10 classes refused at upload',
               e.code.name == 'FAILED_PRECONDITION' and '9 lines' in e.message
               and '10 classes' in e.message, str(e))
    expect('nothing published by the refused upload', not os.path.exists(os.path.join(store, 'cifar', '1')))
    v = client.upload('cifar', os.path.join(tmpl, 'model_weights.pth'),
                      architecture_file=os.path.join(tmpl, 'architecture.pt'), labels=classes,
                      preprocess=cifar_pre)
    manifest = json.load(open(os.path.join(store, 'cifar', str(v), 'manifest.json')))
    expect('the manifest keeps the preprocess', manifest.get('preprocess', {}).get('crop') == 32
           and manifest['preprocess'].get('interpolation') == 'bicubic', f'{manifest}')
    client.load('cifar', v)
    net = CifarNet()
    net.load_state_dict(torch.load(os.path.join(tmpl, 'model_weights.pth')))
    net.eval()
    cifar_tf = T.Compose([T.Resize(36, interpolation=T.InterpolationMode.BICUBIC),
                          T.CenterCrop(32), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    resp = client.predict_images('cifar', photos, top_k=3)
    with torch.no_grad():
        ref = net(torch.stack([cifar_tf(pil(p)) for p in photos])).numpy()
    err = rel_l2(resp.output, ref)
    expect('CIFAR net with its manifest preprocess (bicubic 36, crop 32) within 1% of Python\'s',
           err <= 0.01, f'{err}')
    expect('CIFAR labels', all(c[2] == classes[c[0]] for s in resp.top_k for c in s))
    try:
        client.upload('cifar', os.path.join(tmpl, 'model_weights.pth'),
                      architecture_file=os.path.join(tmpl, 'architecture.pt'),
                      preprocess={'resize': 36, 'crop': 0})
        expect('a bad preprocess is refused at upload', False, 'accepted')
    except ServerError as e:
        expect('a bad preprocess is refused at upload',
               e.code.name == 'INVALID_ARGUMENT' and '"crop"' in e.message, str(e))
    try:
        client.predict_images('ident', [good], version=0, top_k=0)
        client.predict('vgg16', np.zeros((1, 3, 224, 224), np.float32))  # tensors still work
        expect('tensor Predict unchanged next to images', True)
    except ServerError as e:
        expect('tensor Predict unchanged next to images', False, str(e))

    # --- 6. Open Inference Protocol: BYTES input (gRPC) and base64 (REST) ---
    import grpc
    stub = v2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
    req = v2.ModelInferRequest(model_name='vgg16')
    t = req.inputs.add(name='image', datatype='BYTES', shape=[len(photos)])
    t.contents.bytes_contents.extend(open(p, 'rb').read() for p in photos)
    req.outputs.add(name='output').parameters['classification'].int64_param = 2
    r = stub.ModelInfer(req, timeout=120)
    got = [s.decode() for s in r.outputs[0].contents.bytes_contents]
    expect('v2 gRPC: BYTES images -> "score:index:label" classification',
           len(got) == 2 * len(photos) and all(g.split(':')[2] == f'class_{g.split(":")[1]}'
                                               for g in got), f'{got}')
    body = json.dumps({'inputs': [{'name': 'image', 'datatype': 'BYTES', 'shape': [1],
                                   'data': [base64.b64encode(good).decode()]}],
                       'outputs': [{'name': 'output', 'parameters': {'classification': 1}}]})
    http = 'http://127.0.0.1:' + port('http')
    rq = urllib.request.Request(http + '/v2/models/vgg16/infer', data=body.encode(),
                                headers={'Content-Type': 'application/json'})
    out = json.load(urllib.request.urlopen(rq, timeout=120))
    top1 = client.predict_images('vgg16', good, top_k=1).top_k[0][0]
    expect('v2 REST: a base64 JPEG -> its label',
           out['outputs'][0]['data'][0].endswith(f':{top1[0]}:class_{top1[0]}'), f'{out}')
    rq = urllib.request.Request(http + '/v2/models/vgg16/infer', data=json.dumps(
        {'inputs': [{'name': 'image', 'datatype': 'BYTES', 'shape': [1], 'data': ['%%%']}]}
    ).encode(), headers={'Content-Type': 'application/json'})
    try:
        urllib.request.urlopen(rq, timeout=60)
        expect('v2 REST: bad base64 -> 400', False, 'accepted')
    except urllib.error.HTTPError as e:
        expect('v2 REST: bad base64 -> 400', e.code == 400 and 'base64' in e.read().decode())

    def v2_refused(name, request, words):
        try:
            stub.ModelInfer(request, timeout=60)
            expect(name, False, 'accepted')
        except grpc.RpcError as e:
            expect(name, e.code() == grpc.StatusCode.INVALID_ARGUMENT and words in e.details(),
                   e.details())

    bad = v2.ModelInferRequest(model_name='vgg16')
    bad.inputs.add(name='image', datatype='BYTES', shape=[2]).contents.bytes_contents.append(good)
    v2_refused('v2 gRPC: BYTES shape [2] with 1 image refused', bad, '2 elements but 1 images')
    bad = v2.ModelInferRequest(model_name='vgg16')
    bad.inputs.add(name='image', datatype='BYTES', shape=[1])
    bad.raw_input_contents.append(struct.pack('<I', len(good) + 10) + good)
    v2_refused('v2 gRPC: a raw BYTES length past the contents refused', bad, 'past the contents')

    # --- 7. model-client predict --image ---
    r = subprocess.run([client_bin, '--target', target, 'predict', 'vgg16', '--image', photos[0],
                        '--image', photos[1], '--top_k', '3'], capture_output=True, text=True,
                       env=env, timeout=120)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(photos[0]) or ln.startswith(photos[1])]
    expect('model-client predict --image prints "label (probability)" per image',
           r.returncode == 0 and len(lines) == 2 and all(ln.count('class_') == 3 and '(' in ln
                                                           for ln in lines), r.stdout + r.stderr)
    r = subprocess.run([client_bin, '--target', target, '--protocol', 'v2', 'predict', 'ident',
                        '--image', photos[0], '--image', photos[1], '--top_k', '0',
                        '--output', os.path.join(work, 'v2.npy')], capture_output=True, text=True,
                       env=env, timeout=120)
    v2_out = np.load(os.path.join(work, 'v2.npy')) if r.returncode == 0 else None
    expect('model-client --protocol v2 predict --image: BYTES input, same tensor as v1',
           v2_out is not None and v2_out.shape == (2, 3, 224, 224) and np.array_equal(
               v2_out[0], client.predict_images('ident', photos[0], top_k=0).output[0]),
           r.stdout + r.stderr)
    r = subprocess.run([client_bin, '--target', target, 'predict', 'vgg16', '--image',
                        os.path.join(BAD, 'text.txt')], capture_output=True, text=True, env=env,
                       timeout=60)
    expect('model-client: a bad image exits 1 with the status name',
           r.returncode == 1 and 'INVALID_ARGUMENT' in r.stderr and 'image 0' in r.stderr,
           r.stderr)

    # --- 8. metrics: the preprocess histogram counts every decoded image ---
    text = urllib.request.urlopen('http://127.0.0.1:' + port('metrics') + '/metrics').read().decode()
    counts = {s.labels.get('model'): s.value for fam in text_string_to_metric_families(text)
              if fam.name == 'modelserver_preprocess_duration_seconds'
              for s in fam.samples if s.name.endswith('_count')}
    expect('modelserver_preprocess_duration_seconds counts the images',
           counts.get('ident', 0) >= len(IMAGES) + 4 and counts.get('vgg16', 0) >= 3, f'{counts}')

    # --- 9. the example script: the tutorial end to end ---
    r = subprocess.run([sys.executable, os.path.join(source_dir, 'clients', 'python', 'examples',
                                                     'tutorial.py'),
                        '--target', target, '--arch', 'resnet18', '--model', 'tutorial',
                        '--image', photos[0], '--workdir', os.path.join(work, 'tutorial')],
                       capture_output=True, text=True, timeout=600,
                       env=dict(env, PYTHONPATH=pyclient_dir))
    expect('examples/tutorial.py: save -> upload -> predict an image -> label',
           r.returncode == 0 and 'the server matches PyTorch' in r.stdout, r.stdout + r.stderr)
finally:
    stop(proc)

# --- 10. the budgets, on servers with small ones ---
def limited_server(name, flags):
    d = os.path.join(work, name)
    os.makedirs(d)
    p = subprocess.Popen([server_bin, '--store', store, '--model', 'ident', '--listen', '127.0.0.1:0',
                          '--port_file', os.path.join(d, 'port'), '--metrics_listen', '',
                          '--http_listen', '', '--shutdown_grace_seconds', '0'] + flags,
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, 'log'), 'w'), env=env)
    for _ in range(600):
        if os.path.exists(os.path.join(d, 'port')) and open(os.path.join(d, 'port')).read().strip():
            break
        time.sleep(0.1)
    c = ModelServerClient('127.0.0.1:' + open(os.path.join(d, 'port')).read().strip(), timeout=120)
    for _ in range(600):
        if c.status('ident').state == pb.READY:
            break
        time.sleep(0.2)
    return p, c


big = open(os.path.join(fx, 'big.png'), 'rb').read()
proc, lim = limited_server('queue', ['--preprocess_threads', '1', '--max_queued_images', '2'])
try:
    code, msg = code_of(lambda: lim.predict_images('ident', [good] * 3, top_k=0))
    expect('more images than --max_queued_images in one request: INVALID_ARGUMENT',
           code == 'INVALID_ARGUMENT' and 'more than the decoding queue holds (2' in msg, msg)
    # 32 concurrent single-image requests of a slow-to-decode photo against one decode
    # thread and a queue of 2: the queue fills, refusals answer at once, the rest succeed.
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda _: code_of(
            lambda: lim.predict_images('ident', [big], top_k=0)), range(32)))
    codes = [c for c, _ in results]
    full = [m for c, m in results if c == 'RESOURCE_EXHAUSTED']
    expect('a full decoding queue answers RESOURCE_EXHAUSTED, the others succeed',
           full and all('decoding queue is full' in m for m in full)
           and set(codes) <= {'OK', 'RESOURCE_EXHAUSTED'} and 'OK' in codes, f'{results[:4]}')
    print(f'queue of 2, 1 thread, 32 concurrent: {codes.count("OK")} OK, {len(full)} refused')
    expect('the server serves after the burst', code_of(
        lambda: lim.predict_images('ident', [good], top_k=0))[0] == 'OK')
finally:
    stop(proc)
proc, lim = limited_server('budget', ['--max_inflight_request_bytes', '1000000'])
try:
    code, msg = code_of(lambda: lim.predict_images('ident', [good], top_k=0))
    expect('one image fits a 1 MB in-flight budget', code == 'OK', msg)
    code, msg = code_of(lambda: lim.predict_images('ident', [good] * 2, top_k=0))
    expect('two images (1.2 MB decoded) pass the 1 MB budget: RESOURCE_EXHAUSTED',
           code == 'RESOURCE_EXHAUSTED' and '2 images' in msg and 'bytes decoded' in msg
           and '--max_inflight_request_bytes' in msg, msg)
    expect('the budget is given back', code_of(
        lambda: lim.predict_images('ident', [good], top_k=0))[0] == 'OK')
finally:
    stop(proc)
sys.exit(summary(work))
