#!/usr/bin/env python3
"""Predict, status, list, /metrics and a hot reload do not wait for a slow store listing.

An LD_PRELOAD shim (tests/testing/slow_list.c, compiled here with cc) makes listing
the "slowlist" model's directory sleep 20 s once armed -- a network filesystem that takes
seconds to list. The server re-reads its store listing every second
(--store_listing_seconds 1), so once armed, the listing thread is stuck inside that
opendir. While it is stuck (the shim's marker file holds the same token before and after),
Predicts of another model return Python's outputs, LoadModel of it (the registry's writer
lock) completes, and status, ListModels and /metrics answer -- from the cached listing,
which still shows "slowlist". Before the cached listing, ListModels and /metrics listed the
store themselves and waited the 20 s. No timing is asserted: only that everything finished
inside one stuck listing. Usage: slow_listing_test.py SERVER_BIN CLIENT_BIN FIXTURES SOURCE TMP
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'testing'))
from checks import expect, stop, summary  # noqa: E402

server_bin, client_bin, fixtures, source, tmp_root = sys.argv[1:6]
os.makedirs(tmp_root, exist_ok=True)
work = tempfile.mkdtemp(prefix='listing-', dir=tmp_root)
shim = os.path.join(work, 'slow_list.so')
subprocess.run(['cc', '-shared', '-fPIC', '-O1', '-o', shim,
                os.path.join(source, 'tests', 'testing', 'slow_list.c'), '-ldl'], check=True)
store = os.path.join(work, 'store')
for model in ('tiny', 'slowlist'):
    os.makedirs(os.path.join(store, model, '1'))
    shutil.copy(os.path.join(fixtures, 'tiny', 'model_weights.pth'),
                os.path.join(store, model, '1', 'model_weights.pth'))
arch = open(os.path.join(fixtures, 'tiny', 'arch.txt')).read().strip()
arm, marker = os.path.join(work, 'arm'), os.path.join(work, 'marker')
port_file, metrics_port_file = os.path.join(work, 'port'), os.path.join(work, 'metrics_port')
log_path = os.path.join(work, 'server.log')
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
server_env = dict(env, LD_PRELOAD=shim, SLOWLIST_ARM=arm, SLOWLIST_MARKER=marker,
                  SLOWLIST_SECONDS='20')
proc = subprocess.Popen([server_bin, '--store', store, '--model', f'tiny={arch}',
                         '--model', f'slowlist={arch}', '--listen', '127.0.0.1:0',
                         '--port_file', port_file, '--metrics_listen', '127.0.0.1:0', '--http_listen', '',
                         '--metrics_port_file', metrics_port_file,
                         '--store_listing_seconds', '1', '--shutdown_grace_seconds', '1'],
                        stdout=subprocess.DEVNULL, stderr=open(log_path, 'w'), env=server_env)


def client(*args):
    r = subprocess.run([client_bin, '--target', target, '--timeout_ms', '60000', *args],
                       capture_output=True, text=True, env=env, timeout=90)
    return r.returncode, r.stdout + r.stderr


def predict_ok():
    out = os.path.join(work, 'out.npy')
    rc, text = client('predict', '--model', 'tiny', '--input',
                      os.path.join(fixtures, 'tiny', 'input.npy'), '--top_k', '0',
                      '--output', out)
    if rc != 0:
        return False, text
    diff = np.abs(np.load(out) - np.load(os.path.join(fixtures, 'tiny', 'output.npy'))).max()
    return diff <= 1e-4, f'max |diff| {diff}'


def read(path):
    try:
        return open(path).read()
    except FileNotFoundError:
        return None


try:
    for _ in range(600):
        if os.path.exists(port_file) and os.path.exists(metrics_port_file) and \
                'slowlist' in read(log_path) and 'ready on' in read(log_path):
            break
        time.sleep(0.1)
    target = '127.0.0.1:' + read(port_file).strip()
    metrics_url = f'http://127.0.0.1:{read(metrics_port_file).strip()}/metrics'
    for _ in range(300):  # both startup models serve before the listing is made slow
        rc, text = client('list')
        if rc == 0 and text.count('READY') >= 2:
            break
        time.sleep(0.1)
    expect('both models serve before the listing is slowed', text.count('READY') >= 2, text)

    open(arm, 'w').close()
    token = None
    for _ in range(100):  # the listing thread reaches the stuck opendir within ~1 s
        token = read(marker)
        if token:
            break
        time.sleep(0.1)
    expect('the shim holds a listing of the slowlist model', bool(token),
           'no listing of the slowlist directory was delayed: ' + read(log_path)[-500:])

    ok, detail = predict_ok()
    expect('Predict returns Python\'s outputs during the stuck listing', ok, detail)
    rc, text = client('status', 'slowlist')
    expect('status of the slowly listed model answers from the cached listing',
           rc == 0 and 'READY' in text and '1' in text, text)
    rc, text = client('list')
    expect('ListModels answers from the cached listing', rc == 0 and 'slowlist' in text, text)
    rc, text = client('load', 'tiny', '--version', '1')
    expect('LoadModel (the registry\'s writer lock) completes', rc == 0, text)
    ok, detail = predict_ok()
    expect('Predict after the reload returns Python\'s outputs', ok, detail)
    body = urllib.request.urlopen(metrics_url, timeout=60).read().decode()
    expect('/metrics answers', 'modelserver_model_serving_version' in body or 'slowlist' in body,
           body[:300])
    expect('all of it happened inside one stuck listing', read(marker) == token,
           f'marker was {token!r}, now {read(marker)!r}: something waited for the listing')
    os.unlink(arm)
finally:
    stop(proc, timeout=40)

sys.exit(summary(work))
