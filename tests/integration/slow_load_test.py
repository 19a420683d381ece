#!/usr/bin/env python3
"""SIGTERM while a startup model load is stuck: the server exits 0 within its bound.

An LD_PRELOAD shim (tests/testing/slow_open.c, compiled here with cc) makes opening
any file under a "slowload" model directory sleep 60 s, so the load of that model is
still in progress when SIGTERM arrives. The server must answer health meanwhile and
exit 0 within 2 x --shutdown_grace_seconds + 1 + 3 (metrics) s, plus a margin, saying
it did not wait for the load. Usage: slow_load_test.py SERVER_BIN FIXTURES_DIR SOURCE_DIR TMP
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

server_bin, fixtures, source, tmp_root = sys.argv[1:5]
os.makedirs(tmp_root, exist_ok=True)
work = tempfile.mkdtemp(prefix='slowload-', dir=tmp_root)
shim = os.path.join(work, 'slow_open.so')
subprocess.run(['cc', '-shared', '-fPIC', '-O1', '-o', shim,
                os.path.join(source, 'tests', 'testing', 'slow_open.c'), '-ldl'], check=True)
store = os.path.join(work, 'store')
os.makedirs(os.path.join(store, 'slowload', '1'))
with open(os.path.join(fixtures, 'tiny', 'model_weights.pth'), 'rb') as src, \
        open(os.path.join(store, 'slowload', '1', 'model_weights.pth'), 'wb') as dst:
    dst.write(src.read())
arch = open(os.path.join(fixtures, 'tiny', 'arch.txt')).read().strip()
port_file, log_path = os.path.join(work, 'port'), os.path.join(work, 'server.log')
env = dict(os.environ, LD_PRELOAD=shim)
grace = 1
proc = subprocess.Popen([server_bin, '--store', store, '--model', f'slowload={arch}',
                         '--listen', '127.0.0.1:0', '--port_file', port_file,
                         '--metrics_listen', '', '--http_listen', '', '--shutdown_grace_seconds', str(grace)],
                        stdout=subprocess.DEVNULL, stderr=open(log_path, 'w'), env=env)
failures = []
for _ in range(300):
    if os.path.exists(port_file):
        break
    time.sleep(0.1)
time.sleep(1.0)  # the startup load is now inside the stuck open()
log = open(log_path).read()
if 'ready on' in log:
    failures.append('the model loaded although its open() should still be stuck')
start = time.monotonic()
proc.send_signal(signal.SIGTERM)
bound = 2 * grace + 1 + 3 + 10
try:
    code = proc.wait(timeout=bound)
except subprocess.TimeoutExpired:
    proc.kill()
    code = None
took = time.monotonic() - start
log = open(log_path).read()
if code != 0:
    failures.append(f'exit {code} after {took:.1f} s (bound {bound} s)')
if 'a model load is still running' not in log:
    failures.append('the log does not say the stuck load was left: ' + log[-600:])
for f in failures:
    print('FAIL ' + f)
print(f'SIGTERM to exit: {took:.1f} s')
print(f'{2 - min(len(failures), 2)} passed, {len(failures)} failed')
sys.exit(1 if failures else 0)
