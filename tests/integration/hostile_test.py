#!/usr/bin/env python3
"""Hostile and clumsy input against the real server, in a 6 GB memory cgroup.

The server serves VGG16 (Python-made fixture) from a store in a cgroup v1 memory
controller limited to 6 GB (so its default --memory_limit_bytes is 6 GB). Each attack
is crafted here with Python's torch, sent with the real model-client CLI, and must get
its documented code within 30 s; after each, the process is alive and VGG16 still
returns Python's outputs (max |diff| <= 1e-4); refused uploads publish nothing; at the
end the peak RSS (VmHWM) is under the baseline (after VGG16's load and first Predict)
+ 1.5 GB, and SIGTERM with a slow /metrics client still connected exits 0 in time.
Exits 77 (skipped, with the reason) without a memory cgroup or the full fixtures.
Usage: hostile_test.py SERVER_BIN CLIENT_BIN FIXTURES_DIR TMP_DIR
"""
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile

import numpy as np
import torch
import torch.nn as nn
from torchvision.models import vgg as tvgg

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'testing'))
from checks import SANITIZED, expect, expect_memory, summary  # noqa: E402

SKIP = 77
server_bin, client_bin, fixtures, tmp_root = sys.argv[1:5]
os.makedirs(tmp_root, exist_ok=True)
LIMIT = 6 << 30
GRACE = 2
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
work = tempfile.mkdtemp(prefix='hostile-', dir=tmp_root)
store = os.path.join(work, 'store')


def make_cgroup():
    base = '/sys/fs/cgroup/memory'
    if not os.path.isdir(base):
        return None, 'no cgroup v1 memory controller at ' + base
    path = os.path.join(base, f'modelserver-hostile-{os.getpid()}')
    try:
        os.mkdir(path)
        with open(os.path.join(path, 'memory.limit_in_bytes'), 'w') as f:
            f.write(str(LIMIT))
    except OSError as e:
        return None, f'cannot make a memory cgroup: {e}'
    return path, ''


class Server:
    def __init__(self, cgroup):
        port_file, mport_file = os.path.join(work, 'port'), os.path.join(work, 'mport')
        self.log_path = os.path.join(work, 'server.log')

        def enter_cgroup():
            with open(os.path.join(cgroup, 'cgroup.procs'), 'w') as f:
                f.write(str(os.getpid()))

        self.proc = subprocess.Popen(
            [server_bin, '--store', store, '--model', 'vgg16=vgg16', '--listen', '127.0.0.1:0',
             '--port_file', port_file, '--metrics_listen', '127.0.0.1:0', '--http_listen', '', '--metrics_port_file',
             mport_file, '--shutdown_grace_seconds', str(GRACE)],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, 'w'), env=env,
            preexec_fn=enter_cgroup)
        for _ in range(600):
            if os.path.exists(port_file) and os.path.exists(mport_file):
                break
            if self.proc.poll() is not None:
                raise RuntimeError('server exited: ' + self.log())
            time.sleep(0.1)
        self.port = int(open(port_file).read())
        self.mport = int(open(mport_file).read())
        self.target = f'127.0.0.1:{self.port}'

    def log(self):
        return open(self.log_path).read()

    def hwm(self):
        for line in open(f'/proc/{self.proc.pid}/status'):
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
        return 0


def client(server, *args, timeout=60):
    t = time.monotonic()
    r = subprocess.run([client_bin, '--target', server.target, '--timeout_ms', '30000', *args],
                       capture_output=True, text=True, env=env, timeout=timeout)
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t


def vgg_ok(server):
    out = os.path.join(work, 'vgg_out.npy')
    rc, text, _ = client(server, 'predict', '--model', 'vgg16', '--input',
                         os.path.join(fixtures, 'vgg16', 'input.npy'), '--top_k', '0',
                         '--output', out)
    if rc != 0:
        return False, text
    diff = np.abs(np.load(out) - np.load(os.path.join(fixtures, 'vgg16', 'output.npy'))).max()
    return diff <= 1e-4, f'max |diff| {diff}'


def models_in_store():
    return sorted(e for e in os.listdir(store) if not e.startswith('.'))


def status_of(server, name):
    return client(server, 'status', name)[1]


# ---------------------------------------------------------------- crafted files
def tiny_torchvision_vgg(cfg):
    m = tvgg.VGG(tvgg.make_layers(cfg), num_classes=10, init_weights=False)
    m.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    channels = [c for c in cfg if c != 'M'][-1]
    m.classifier = nn.Sequential(nn.Linear(channels, 16),
                                 nn.ReLU(True), nn.Dropout(), nn.Linear(16, 16), nn.ReLU(True),
                                 nn.Dropout(), nn.Linear(16, 10))
    return m.eval()


def save(obj, name):
    path = os.path.join(work, name)
    torch.save(obj, path)
    return path


def pickle_archive(name, pkl):
    """A torch.save-shaped zip whose data.pkl is `pkl` (stored, as torch writes it)."""
    path = os.path.join(work, name)
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
        z.writestr('archive/data.pkl', pkl)
        z.writestr('archive/version', '3\n')
    return path


def set_copies_pickle():
    # A list of 20,000 ints memoised, then set(list) of it 20,000 times (3.2 GB of copies).
    b = bytearray(b'\x80\x02]q\x00(')
    for i in range(20000):
        b += b'K' + bytes([i % 256])
    b += b'e'
    b += (b'c__builtin__\nset\nh\x00\x85R0') * 20000
    return bytes(b + b'}.')


def none_pop_pickle():
    b = bytearray(b'\x80\x02')
    b += b'N0' * (32 << 20)
    return bytes(b + b'N.')


def overlapping_zip(name):
    """One 32 MiB record and 150 central-directory entries pointing at it."""
    data = b'\0' * (32 << 20)
    rec_name = b'archive/data.pkl'
    local = struct.pack('<IHHHHHIIIHH', 0x04034b50, 20, 0, 0, 0, 0, 0, len(data), len(data),
                        len(rec_name), 0) + rec_name
    cd = b''
    for i in range(150):
        n = f'archive/data/{i}'.encode()
        cd += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 20, 20, 0, 0, 0, 0, 0, len(data),
                          len(data), len(n), 0, 0, 0, 0, 0, 0) + n
    end = struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, 150, 150, len(cd), len(local) + len(data), 0)
    path = os.path.join(work, name)
    with open(path, 'wb') as f:
        f.write(local + data + cd + end)
    return path


class ExpandBomb(nn.Module):
    def forward(self, x):
        return x.new_zeros([1]).expand([x.shape[0], 1048576, 1048576])


class SparseOut(nn.Module):
    def forward(self, x):
        return x.to_sparse()


class Rank3Out(nn.Module):
    def forward(self, x):
        return x.unsqueeze(1)


class MetaOut(nn.Module):
    def forward(self, x):
        return x.to(device=torch.device('meta'))


# ---------------------------------------------------------------- attacks
def upload(server, name, path, fmt, arch=''):
    args = ['upload', name, '--file', path, '--format', fmt]
    if arch:
        args += ['--architecture', arch]
    return client(server, *args)


def run_attacks(s):
    def refused_upload(label, name, path, fmt, codes, arch=''):
        before = models_in_store()
        rc, out, secs = upload(s, name, path, fmt, arch)
        expect(f'{label}: upload refused with {codes}',
               rc != 0 and any(c in out for c in codes) and secs < 30, f'{rc} {secs:.1f}s {out}')
        expect(f'{label}: nothing published', models_in_store() == before, models_in_store())
        print(f'     peak RSS so far {s.hwm() >> 20} MiB', flush=True)

    def refused_load(label, name, path, fmt, codes, arch=''):
        rc, out, _ = upload(s, name, path, fmt, arch)
        expect(f'{label}: upload of the file', rc == 0, out)
        rc, out, secs = client(s, 'load', name, '--version', '1')
        expect(f'{label}: load refused with {codes}',
               rc != 0 and any(c in out for c in codes) and secs < 30, f'{rc} {secs:.1f}s {out}')
        return out

    cfg = [8, 'M', 16, 'M']
    m = tiny_torchvision_vgg(cfg)
    m.features[2].kernel_size = 'x'  # a MaxPool2d with a string kernel size
    refused_load('pickled VGG, string kernel_size', 'a_kernel', save(m, 'kernel.pth'),
                 'PICKLED_MODULE', ['FAILED_PRECONDITION'])
    sd = tiny_torchvision_vgg(cfg).state_dict()
    deep = 'vgg:cfg=8' + '-M' * 16 + ':classes=10:hidden=16:pool=1'
    refused_upload('state dict, 16 max-pools', 'a_deep_sd', save(sd, 'deep_sd.pth'), 'STATE_DICT',
                   ['INVALID_ARGUMENT'], arch=deep)
    deep_vgg = tiny_torchvision_vgg([8] + ['M'] * 16)
    rc, out, _ = upload(s, 'a_deep', save(deep_vgg, 'deep.pth'), 'PICKLED_MODULE')
    rc, out, secs = client(s, 'load', 'a_deep', '--version', '1')
    if rc == 0:  # served as a layer stack (no warm-up at 65536 x 65536); inputs then fail
        rc, out, secs = client(s, 'predict', '--model', 'a_deep', '--shape', '1,3,224,224')
        expect('pickled VGG, 16 max-pools: Predict INVALID_ARGUMENT',
               rc != 0 and 'INVALID_ARGUMENT' in out and secs < 30, out)
    else:
        expect('pickled VGG, 16 max-pools: load refused', 'FAILED_PRECONDITION' in out, out)
    for label, module in (('TorchScript sparse output', SparseOut()),):
        path = os.path.join(work, label.replace(' ', '_') + '.pt')
        torch.jit.script(module).save(path)
        # Uploads of code-bearing files are loaded (in a sandboxed worker) before
        # anything is published: the allowlist refuses them there.
        refused_upload(label, 'a_' + label.split()[1], path, 'TORCHSCRIPT', ['FAILED_PRECONDITION'])
    # Outputs made of allowed operators that no server can hand back: terabytes
    # (new_zeros + a stride-0 expand) and a meta-device tensor (aten::to). The
    # output checks answer the request, in the worker, before anything copies it.
    for label, module, codes in (
            ('expand bomb', ExpandBomb(), ('RESOURCE_EXHAUSTED', 'INVALID_ARGUMENT')),
            ('meta output', MetaOut(), ('INVALID_ARGUMENT',))):
        name = 'a_' + label.split()[0]
        path = os.path.join(work, name + '.pt')
        torch.jit.script(module).save(path)
        upload(s, name, path, 'TORCHSCRIPT')
        rc, out, _ = client(s, 'load', name, '--version', '1')
        expect(f'TorchScript {label}: loads', rc == 0, out)
        rc, out, secs = client(s, 'predict', '--model', name, '--shape', '2,3')
        expect(f'TorchScript {label}: Predict {" or ".join(codes)}, process alive',
               rc != 0 and any(c in out for c in codes) and s.proc.poll() is None and secs < 30,
               out)
    # top_k on a model whose outputs are not [N, C]: the first request finds out
    # after computing, later ones are refused before (no second batch runs).
    path = os.path.join(work, 'rank3.pt')
    torch.jit.script(Rank3Out()).save(path)
    upload(s, 'a_rank3', path, 'TORCHSCRIPT')
    client(s, 'load', 'a_rank3', '--version', '1')
    first = client(s, 'predict', '--model', 'a_rank3', '--shape', '2,3', '--top_k', '3')
    second = client(s, 'predict', '--model', 'a_rank3', '--shape', '2,3', '--top_k', '3')
    with urllib.request.urlopen(f'http://127.0.0.1:{s.mport}/metrics', timeout=10) as r:
        metrics = r.read().decode()
    batches = [l for l in metrics.splitlines()
               if l.startswith('modelserver_batch_size_count{model="a_rank3"}')]
    expect('top_k on a rank-3 output: refused, the second time before computing',
           'FAILED_PRECONDITION' in first[1] and 'FAILED_PRECONDITION' in second[1]
           and batches and batches[0].split()[-1] == '1', f'{first[1]} {second[1]} {batches}')
    rc, out, secs = upload(s, 'a_fromfile', os.path.join(fixtures, 'ts_from_file', 'model.pt'),
                           'TORCHSCRIPT')
    expect('TorchScript reading a server file: upload refused with FAILED_PRECONDITION',
           rc != 0 and 'FAILED_PRECONDITION' in out and secs < 30, out)
    expect('TorchScript reading a server file: no byte of it returned', 'SECRET' not in out, out)

    rc, out, secs = client(s, 'predict', '--model', 'vgg16', '--shape', '1,3,2300,2300',
                           '--top_k', '0')
    expect('one [1,3,2300,2300] Predict refused before computing',
           rc != 0 and 'INVALID_ARGUMENT' in out and 'MiB' in out and secs < 30, out)
    print(f'     peak RSS so far {s.hwm() >> 20} MiB', flush=True)
    # Under a sanitizer, moving 24 x 60 MB through gRPC can take longer than the
    # client's 30 s deadline before the refusals come back: give it 120 s there.
    slow = ['--timeout_ms', '120000'] if SANITIZED else []
    rc, out, secs = client(s, 'bench', '--model', 'vgg16', '--shape', '1,3,2300,2300',
                           '--concurrency', '24', '--duration', '3s', '--warmup', '0s',
                           '--top_k', '0', *slow, timeout=300)
    codes_ok = ('INVALID_ARGUMENT' in out or 'RESOURCE_EXHAUSTED' in out) and not any(
        c in out for c in ('INTERNAL', 'UNAVAILABLE', 'UNKNOWN', 'DEADLINE'))
    expect('24 concurrent 60 MB Predicts all refused with their codes', rc != 0 and codes_ok, out)
    print(f'     peak RSS so far {s.hwm() >> 20} MiB', flush=True)

    refused_upload('pickle of set(list) copies', 'a_copies',
                   pickle_archive('copies.pth', set_copies_pickle()), 'STATE_DICT',
                   ['RESOURCE_EXHAUSTED'], arch='vgg16')
    refused_upload('64 MiB pickle of NONE/POP', 'a_nonepop',
                   pickle_archive('nonepop.pth', none_pop_pickle()), 'STATE_DICT',
                   ['FAILED_PRECONDITION', 'RESOURCE_EXHAUSTED'], arch='vgg16')
    refused_upload('150 zip entries on one 32 MiB record', 'a_overlap',
                   overlapping_zip('overlap.pth'), 'STATE_DICT', ['DATA_LOSS'], arch='vgg16')
    refused_upload('dict of 200k int keys', 'a_intkeys',
                   pickle_archive('intkeys.pth', pickle.dumps({i: i for i in range(200000)}, 2)),
                   'STATE_DICT', ['FAILED_PRECONDITION'], arch='vgg16')
    lin = nn.Linear(2, 2)
    lin.weight = nn.Parameter(torch.zeros(1).expand(34000, 34000))
    lin.bias = nn.Parameter(torch.zeros(34000))
    lin.in_features = lin.out_features = 34000
    refused_load('pickled Linear with a stride-0 34000x34000 weight', 'a_stride0',
                 save(nn.Sequential(lin), 'stride0.pth'), 'PICKLED_MODULE',
                 ['FAILED_PRECONDITION'])
    shared = nn.ReLU()
    for _ in range(64):
        shared = nn.Sequential(shared, shared)
    refused_upload('64 memoised Sequentials sharing children', 'a_shared',
                   save(shared, 'shared.pth'), 'PICKLED_MODULE', ['FAILED_PRECONDITION'])


def download_of_a_shrinking_file(s):
    """A stored file cut short while it is being downloaded: DATA_LOSS, and the
    call is counted (so the drain does not wait for it)."""
    os.makedirs(os.path.join(store, 'a_dl', '1'))
    stored = os.path.join(store, 'a_dl', '1', 'model_weights.pth')
    shutil.copy(os.path.join(fixtures, 'vgg16', 'model_weights.pth'), stored)
    out = os.path.join(work, 'dl.pth')
    proc = subprocess.Popen([client_bin, '--target', s.target, 'download', 'a_dl', '--file', out],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    part = out + '.part'  # the CLI writes here until the download completes
    for _ in range(5000):
        if os.path.exists(part) and os.path.getsize(part) > (8 << 20) or proc.poll() is not None:
            break
        time.sleep(0.001)
    os.truncate(stored, 16 << 20)
    text = proc.communicate(timeout=60)[0]
    with urllib.request.urlopen(f'http://127.0.0.1:{s.mport}/metrics', timeout=10) as r:
        metrics = r.read().decode()
    counted = [l for l in metrics.splitlines() if l.startswith('modelserver_requests_total{')
               and 'DownloadCheckpoint' in l and 'DATA_LOSS' in l]
    expect('download of a file cut short: DATA_LOSS, and counted',
           proc.returncode != 0 and 'DATA_LOSS' in text and counted and counted[0].endswith(' 1'),
           f'{text} {counted}')
    shutil.rmtree(os.path.join(store, 'a_dl'))


def slow_metrics_client(port, stop):
    sock = socket.create_connection(('127.0.0.1', port))
    request = b'GET /metrics HTTP/1.1\r\nX-Slow: ' + b'a' * 4000
    for byte in request:
        if stop.is_set():
            break
        try:
            sock.send(bytes([byte]))
        except OSError:
            break
        time.sleep(0.5)
    sock.close()


def main():
    if not os.path.exists(os.path.join(fixtures, 'vgg16', 'model_weights.pth')):
        print('SKIPPED: the VGG16 fixture was not made (make_fixtures.py --no-full)')
        return SKIP
    cgroup, why = make_cgroup()
    if cgroup is None:
        print(f'SKIPPED: {why}')
        return SKIP
    os.makedirs(os.path.join(store, 'vgg16', '1'))
    src = os.path.join(fixtures, 'vgg16', 'model_weights.pth')
    dst = os.path.join(store, 'vgg16', '1', 'model_weights.pth')
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)
    s = None
    try:
        s = Server(cgroup)
        for _ in range(600):
            if 'READY' in status_of(s, 'vgg16'):
                break
            time.sleep(0.2)
        ok, detail = vgg_ok(s)
        expect('VGG16 serves Python\'s outputs in a 6 GB cgroup', ok, detail)
        expect('memory limit taken from the cgroup', 'memory limit 6144 MiB from cgroup' in s.log(),
               s.log()[-800:])
        baseline = s.hwm()
        run_start = time.monotonic()
        run_attacks(s)
        download_of_a_shrinking_file(s)
        ok, detail = vgg_ok(s)
        expect('after every attack: alive and VGG16 still equals Python',
               s.proc.poll() is None and ok, detail)
        peak = s.hwm()
        expect_memory('peak RSS under baseline + 1.5 GB',
               peak <= baseline + (3 << 29), f'baseline {baseline >> 20} MiB, peak {peak >> 20} MiB')
        print(f'baseline {baseline >> 20} MiB, peak {peak >> 20} MiB, attacks took '
              f'{time.monotonic() - run_start:.0f} s', flush=True)
        stop = threading.Event()
        slow = threading.Thread(target=slow_metrics_client, args=(s.mport, stop))
        slow.start()
        time.sleep(1)
        for i in range(3):
            with urllib.request.urlopen(f'http://127.0.0.1:{s.mport}/metrics', timeout=10) as r:
                expect(f'scrape {i} answered while a slow client holds a connection',
                       r.status == 200 and b'modelserver_requests_total' in r.read())
        start = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        bound = 2 * GRACE + 3 + 15  # drain, close, metrics stop, margin
        try:
            code = s.proc.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            code = None
        expect('SIGTERM with a slow client connected exits 0 within the bound',
               code == 0, f'exit {code} after {time.monotonic() - start:.1f} s (bound {bound} s)')
        stop.set()
        slow.join()
    finally:
        if s is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        time.sleep(0.2)
        try:
            os.rmdir(cgroup)
        except OSError:
            pass
        shutil.rmtree(work, ignore_errors=True)
    return summary()


if __name__ == '__main__':
    sys.exit(main())
