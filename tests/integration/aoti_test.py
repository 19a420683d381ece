#!/usr/bin/env python3
"""AOTInductor packages (format AOTI_PACKAGE) served by the real server.

Where this Python's torch compiles packages (Debian 13's torch 2.6, with setuptools and
python3-dev), a small CNN exported with a dynamic batch (torch.export.Dim, [1, 64]) is
compiled by torch._inductor.aoti_compile_and_package, and Python's
`aoti_load_package(path)(x)` gives the expected outputs. Then, through the Python client:

- a hand-copied model.pt2 is told apart from an exported program (status AOTI_PACKAGE),
  loads in a sandboxed model worker (the log names its pid and confinement) and serves
  batches 1..8 equal to Python's within 1e-5 of the largest |output|;
- 16 concurrent one-sample clients each get what their sample gets alone (the queue
  merges them into batches the package was compiled for);
- an upload of model.pt2 (the client tells the package from a program) serves the same;
- SaveModel(AOTI_PACKAGE) writes the package byte for byte; SaveModel(STATE_DICT) is
  UNIMPLEMENTED;
- with --trust_compiled_models the package runs in process and serves the same;
- with the program it was compiled from beside it (architecture.pt2, hand-copied or
  uploaded as the architecture file), an input of another shape is INVALID_ARGUMENT naming
  the dimension and 100 samples (past the range's 64) run in pieces, sandboxed and in
  process.

On every build, with packages made here by hand (gcc): a package whose library's
constructor tries to read /etc/passwd and a file of this test, to create a file and to
open a socket, and says on stderr what it got. Sandboxed, every attempt fails (the log
shows the refusals, the file is not created) and the load fails cleanly, the server
serving on; with --trust_compiled_models the same constructor succeeds (which shows the
test can fail). A package whose library is not an ELF file is FAILED_PRECONDITION. On a
build whose LibTorch is older than 2.6 (Debian 12's 1.13), every package is refused with
UNIMPLEMENTED naming the LibTorch, and no constructor runs.

Usage: aoti_test.py SERVER_BIN SOURCE_DIR PYCLIENT_DIR TMP
"""
import concurrent.futures
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np

server_bin, source_dir, pyclient_dir, tmp_root = sys.argv[1:5]
sys.path.insert(0, os.path.join(source_dir, 'tests', 'testing'))
sys.path.insert(0, pyclient_dir)
from checks import close_to, code_of, expect, make_work, start_server, stop, summary  # noqa: E402
from modelserver_client import ModelServerClient as Client  # noqa: E402
from modelserving.v1 import model_service_pb2 as pb  # noqa: E402

token = 'aoti-test-token'
work = make_work(tmp_root, 'aoti-', token)
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}

COMPILE = r'''
import sys, numpy as np, torch
torch.manual_seed(3)
class Net(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = torch.nn.Conv2d(3, 8, 3, padding=1); s.bn = torch.nn.BatchNorm2d(8)
        s.c2 = torch.nn.Conv2d(8, 16, 3, stride=2); s.fc = torch.nn.Linear(16, 10)
        s.bn.running_mean.uniform_(-0.5, 0.5); s.bn.running_var.uniform_(0.5, 2)
    def forward(s, x):
        x = torch.relu(s.bn(s.c1(x))); x = torch.relu(s.c2(x))
        return s.fc(x.mean((2, 3)))
m = Net().eval()
x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(5))
ep = torch.export.export(m, (x[:2],),
                         dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
path = torch._inductor.aoti_compile_and_package(ep, package_path=sys.argv[1])
f = torch._inductor.aoti_load_package(path)
np.save(sys.argv[2], x.numpy())
with torch.no_grad():
    for b in range(1, 9):
        np.save(sys.argv[3] + f"_{b}.npy", f(x[:b]).numpy())
    torch.export.save(ep, sys.argv[4])
print(torch.__version__)
'''

# A library whose constructor runs the moment it is opened: what could a package's
# code reach? It reports each attempt on stderr.
HOSTILE_C = r'''
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static void report(const char* what, int rc) {
  fprintf(stderr, "HOSTILE %s = %d (%s)\n", what, rc, rc < 0 ? strerror(errno) : "ok");
}
__attribute__((constructor)) static void attack(void) {
  int fd = open("/etc/passwd", O_RDONLY);
  report("open /etc/passwd", fd);
  fd = open(SECRET, O_RDONLY);
  report("open secret", fd);
  char buf[64] = {0};
  if (fd >= 0) report("read secret", (int)read(fd, buf, sizeof buf - 1));
  fd = open(MARKER, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  report("create marker", fd);
  if (fd >= 0) write(fd, buf, strlen(buf));
  report("socket", socket(AF_INET, SOCK_STREAM, 0));
}
'''


def package_with_library(path, so_path):
    """An AOTInductor package laid out as aoti_compile_and_package writes it (torch 2.6:
    no root folder), around the library at `so_path`."""
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
        z.writestr('version', '1\n')
        z.writestr('archive_format', 'pt2')
        z.writestr('data/aotinductor/model/hostile.cpp', '// not compiled here\n')
        z.writestr('data/aotinductor/model/hostile_metadata.json', '{"AOTI_DEVICE_KEY": "cpu"}')
        z.write(so_path, 'data/aotinductor/model/hostile.so')


def put(store, model, src, version=1):
    d = os.path.join(store, model, str(version))
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(src, os.path.join(d, 'model.pt2'))


def log_text(path):
    with open(path, errors='replace') as f:
        return f.read()


def hostile_packages():
    """(hostile package, not-ELF package, secret path, marker path), built with gcc."""
    d = os.path.join(work, 'hostile')
    os.makedirs(d)
    secret = os.path.join(d, 'secret.txt')
    with open(secret, 'w') as f:
        f.write('the-secret-of-aoti-test')
    marker = os.path.join(d, 'created-by-the-package')
    src = os.path.join(d, 'hostile.c')
    with open(src, 'w') as f:
        f.write(HOSTILE_C)
    so = os.path.join(d, 'hostile.so')
    built = subprocess.run(['gcc', '-shared', '-fPIC', '-O1', f'-DSECRET="{secret}"',
                            f'-DMARKER="{marker}"', '-o', so, src],
                           capture_output=True, text=True)
    if built.returncode != 0:
        expect('gcc builds the hostile library', False, built.stderr[-500:])
        return None
    hostile = os.path.join(d, 'hostile.pt2')
    package_with_library(hostile, so)
    not_elf_so = os.path.join(d, 'not_elf.so')
    with open(not_elf_so, 'wb') as f:
        f.write(b'this is not an ELF file' * 10)
    not_elf = os.path.join(d, 'not_elf.pt2')
    package_with_library(not_elf, not_elf_so)
    return hostile, not_elf, secret, marker


def compile_package():
    """(package, input, {batch: Python's output}, program) or None when this torch cannot."""
    d = os.path.join(work, 'compiled')
    os.makedirs(d)
    pkg, x, out, prog = (os.path.join(d, 'model.pt2'), os.path.join(d, 'x.npy'),
                         os.path.join(d, 'out'), os.path.join(d, 'program.pt2'))
    t = time.monotonic()
    r = subprocess.run(['/usr/bin/python3', '-c', COMPILE, pkg, x, out, prog],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ['?'])[-1]
        print(f'skip the compiled-package checks: this Python cannot compile an AOTInductor '
              f'package ({tail[:300]})', flush=True)
        return None
    print(f'compiled the package with torch {r.stdout.strip()} in '
          f'{time.monotonic() - t:.1f} s', flush=True)
    return pkg, np.load(x), {b: np.load(f'{out}_{b}.npy') for b in range(1, 9)}, prog


def served_batches(c, model, x, want, what):
    diffs = []
    ok = True
    for b in range(1, 9):
        code, msg = code_of(lambda: diffs.append(c.predict(model, x[:b]).output))
        if code != 'OK':
            expect(f'{what}: batch {b} serves', False, f'{code} {msg}')
            return False
        good, detail = close_to(diffs[-1], want[b])
        ok = ok and good
        if not good:
            print(f'  batch {b}: {detail}', flush=True)
    expect(f'{what}: batches 1..8 equal Python\'s aoti_load_package(path)(x)', ok)
    return ok


def shape_checks(c, model, x, want, what):
    """A package served with the program it was compiled from (architecture.pt2):
    shapes checked against the program's, batches past its range run in pieces."""
    code, msg = code_of(lambda: c.predict(model, np.zeros((2, 3, 17, 16), np.float32)))
    expect(f'{what}: an input of another shape is INVALID_ARGUMENT naming the dimension',
           code == 'INVALID_ARGUMENT' and
           'dimension 2 of the input is 17; the package was compiled for exactly 16' in msg,
           f'{code} {msg}')
    big = np.concatenate([x] * 13)[:100]  # past the batch range's 64
    got = []
    code, msg = code_of(lambda: got.append(c.predict(model, big).output))
    tiled = np.concatenate([want[8]] * 13)[:100]
    expect(f'{what}: 100 samples (the range is [1, 64]) run in pieces, each sample\'s output',
           code == 'OK' and close_to(got[0], tiled)[0],
           f'{code} {msg}' if code != 'OK' else close_to(got[0], tiled)[1])


def sandboxed_checks(pkg, x, want, program):
    store = os.path.join(work, 'store')
    put(store, 'cnn', pkg)
    put(store, 'cnnspec', pkg)
    shutil.copyfile(program, os.path.join(store, 'cnnspec', '1', 'architecture.pt2'))
    proc, port, _, log = start_server(server_bin, work, store, 'sandboxed',
                                      extra=['--max_queue_size', '256'], env=env)
    expect('the server starts', port is not None, log_text(log)[-2000:])
    if port is None:
        return
    try:
        with Client(f'127.0.0.1:{port}', admin_token=token, timeout=300) as c:
            code, msg = code_of(lambda: c.load('cnn'))
            expect('a hand-copied AOTInductor package loads', code == 'OK', f'{code} {msg}')
            st = str(c.status('cnn'))
            expect('its status says AOTI_PACKAGE', 'AOTI_PACKAGE' in st, st[:400])
            text = log_text(log)
            m = re.search(r"model 'cnn' version 1 runs in a sandboxed worker \(pid (\d+)\): (.*)",
                          text)
            expect('it runs in a sandboxed model worker (the log names its pid and confinement)',
                   m is not None and 'seccomp filter loaded' in m.group(2), text[-1500:])
            if m:
                print(f'  worker: {m.group(2)}', flush=True)
                with open(f'/proc/{m.group(1)}/cmdline', 'rb') as f:
                    argv = f.read().split(b'\0')
                expect('the worker is model-worker --compiled 1',
                       argv[0].endswith(b'model-worker') and b'--compiled' in argv, str(argv))
            served_batches(c, 'cnn', x, want, 'the sandboxed package')

            alone = [c.predict('cnn', x[i:i + 1]).output for i in range(8)]
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                outs = list(pool.map(lambda i: c.predict('cnn', x[i % 8:i % 8 + 1]).output,
                                     range(16)))
            expect('16 concurrent one-sample requests get their samples\' outputs',
                   all(close_to(o, alone[i % 8])[0] for i, o in enumerate(outs)),
                   [close_to(o, alone[i % 8])[1] for i, o in enumerate(outs)][:2])

            up = os.path.join(work, 'upload', 'model.pt2')
            os.makedirs(os.path.dirname(up))
            shutil.copyfile(pkg, up)
            code, msg = code_of(lambda: c.upload('uploaded', up))
            expect('an upload of the package is accepted (format told from its contents)',
                   code == 'OK', f'{code} {msg}')
            if code == 'OK':
                code, msg = code_of(lambda: c.load('uploaded'))
                expect('the uploaded package loads', code == 'OK', f'{code} {msg}')
                served_batches(c, 'uploaded', x, want, 'the uploaded package')
            code, msg = code_of(lambda: c.load('cnnspec'))
            expect('a package with its program (architecture.pt2) loads', code == 'OK',
                   f'{code} {msg}')
            if code == 'OK':
                served_batches(c, 'cnnspec', x, want, 'the package with its program')
                shape_checks(c, 'cnnspec', x, want, 'sandboxed')
            code, msg = code_of(lambda: c.upload('upspec', up, architecture_file=program))
            expect('an upload of the package with its program is accepted', code == 'OK',
                   f'{code} {msg}')
            if code == 'OK' and code_of(lambda: c.load('upspec'))[0] == 'OK':
                shape_checks(c, 'upspec', x, want, 'uploaded with its program')
                m = json.load(open(os.path.join(store, 'upspec', '1', 'manifest.json')))
                expect('its manifest names architecture.pt2',
                       m.get('architecture_file') == 'architecture.pt2', str(m))
            code, msg = code_of(lambda: c.upload('uploaded', up, format='exported_program'))
            expect('the package uploaded as EXPORTED_PROGRAM is refused naming AOTI_PACKAGE',
                   code in ('FAILED_PRECONDITION', 'INVALID_ARGUMENT') and
                   'AOTI_PACKAGE' in msg, f'{code} {msg}')

            resp = c._call(c._stub.SaveModel, pb.SaveModelRequest(
                model_name='cnn', format=pb.AOTI_PACKAGE, target_model_name='saved'), admin=True)
            saved = os.path.join(store, 'saved', str(resp.version), 'model.pt2')
            expect('SaveModel(AOTI_PACKAGE) writes the package as it was given',
                   os.path.exists(saved) and filecmp.cmp(saved, pkg, shallow=False), saved)
            code, msg = code_of(lambda: c._call(c._stub.SaveModel, pb.SaveModelRequest(
                model_name='cnn', format=pb.STATE_DICT, target_model_name='saved2'), admin=True))
            expect('SaveModel(STATE_DICT) of a package is UNIMPLEMENTED',
                   code == 'UNIMPLEMENTED' and 'AOTI_PACKAGE' in msg, f'{code} {msg}')
    finally:
        stop(proc)


def trusted_checks(pkg, x, want, program):
    store = os.path.join(work, 'store-trusted')
    put(store, 'cnn', pkg)
    shutil.copyfile(program, os.path.join(store, 'cnn', '1', 'architecture.pt2'))
    proc, port, _, log = start_server(server_bin, work, store, 'trusted',
                                      extra=['--trust_compiled_models', '--max_queue_size', '256'],
                                      env=env)
    if port is None:
        expect('the server starts with --trust_compiled_models', False, log_text(log)[-2000:])
        return
    try:
        with Client(f'127.0.0.1:{port}', admin_token=token, timeout=300) as c:
            code, msg = code_of(lambda: c.load('cnn'))
            expect('with --trust_compiled_models the package loads', code == 'OK', f'{code} {msg}')
            expect('... in process (no sandboxed worker)',
                   'runs in a sandboxed worker' not in log_text(log), log_text(log)[-800:])
            if code == 'OK':
                served_batches(c, 'cnn', x, want, 'the in-process package')
                shape_checks(c, 'cnn', x, want, 'in process')
    finally:
        stop(proc)


def hostile_checks(packages, aoti_build):
    hostile, not_elf, secret, marker = packages
    store = os.path.join(work, 'store-hostile')
    put(store, 'hostile', hostile)
    put(store, 'notelf', not_elf)
    proc, port, _, log = start_server(server_bin, work, store, 'hostile', env=env)
    expect('the server starts (hostile store)', port is not None, log_text(log)[-2000:])
    if port is None:
        return
    try:
        with Client(f'127.0.0.1:{port}', admin_token=token, timeout=300) as c:
            code, msg = code_of(lambda: c.load('hostile'))
            text = log_text(log)
            if not aoti_build:
                expect('this LibTorch (< 2.6) refuses a package with UNIMPLEMENTED naming it',
                       code == 'UNIMPLEMENTED' and 'LibTorch 2.6' in msg, f'{code} {msg}')
                expect('... before its library is opened (no constructor ran)',
                       'HOSTILE' not in text, text[-800:])
            else:
                attempts = dict(re.findall(r'HOSTILE (.*?) = (-?\d+)', text))
                print(f'  the constructor reported: {attempts}', flush=True)
                expect('the package\'s constructor ran in the sandboxed worker',
                       'open /etc/passwd' in attempts, text[-1500:])
                expect('... and could not open /etc/passwd, the secret, create a file or '
                       'open a socket',
                       all(attempts.get(k) == '-1' for k in
                           ('open /etc/passwd', 'open secret', 'create marker', 'socket'))
                       and not os.path.exists(marker), str(attempts))
                expect('the load fails (not a real package) with a clear error',
                       code in ('FAILED_PRECONDITION', 'UNAVAILABLE'), f'{code} {msg}')
            code, msg = code_of(lambda: c.load('notelf'))
            if aoti_build:
                expect('a package whose library is not ELF is FAILED_PRECONDITION',
                       code == 'FAILED_PRECONDITION' and 'librar' in msg, f'{code} {msg}')
            else:
                expect('a package whose library is not ELF is UNIMPLEMENTED here',
                       code == 'UNIMPLEMENTED', f'{code} {msg}')
            cpp_only = os.path.join(work, 'hostile', 'cpp-only', 'model.pt2')
            os.makedirs(os.path.dirname(cpp_only))
            with zipfile.ZipFile(cpp_only, 'w', zipfile.ZIP_STORED) as z:
                z.writestr('archive_format', 'pt2')
                z.writestr('data/aotinductor/model/x.cpp', '// sources only')
            code, msg = code_of(lambda: c.upload('cpponly', cpp_only, format='aoti_package'))
            expect('an upload of a package without a library is refused before any worker',
                   code == 'FAILED_PRECONDITION' and 'no compiled library' in msg, f'{code} {msg}')
            expect('the server serves on', c.list_models() is not None)
    finally:
        stop(proc)
    if not aoti_build:
        return
    # The same constructor in process: it reaches what the sandbox kept from it.
    proc, port, _, log = start_server(server_bin, work, store, 'hostile-trusted',
                                      extra=['--trust_compiled_models'], env=env)
    try:
        with Client(f'127.0.0.1:{port}', admin_token=token, timeout=300) as c:
            code_of(lambda: c.load('hostile'))
        attempts = dict(re.findall(r'HOSTILE (.*?) = (-?\d+)', log_text(log)))
        expect('with --trust_compiled_models the same constructor reads the secret and '
               'creates its file (so the sandboxed check can fail)',
               attempts.get('open secret', '-1') != '-1' and os.path.exists(marker) and
               open(marker).read() == 'the-secret-of-aoti-test', str(attempts))
    finally:
        stop(proc)


def build_has_aoti():
    """Whether this server serves packages: its startup line names its LibTorch."""
    store = os.path.join(work, 'store-probe')
    os.makedirs(store)
    proc, port, _, log = start_server(server_bin, work, store, 'probe', env=env)
    stop(proc)
    m = re.search(r'LibTorch (\d+)\.(\d+)', log_text(log))
    expect('the startup line names the LibTorch', m is not None, log_text(log)[-800:])
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (2, 6)


aoti_build = build_has_aoti()
print(f'this build serves AOTInductor packages: {aoti_build}', flush=True)
packages = hostile_packages()
if packages:
    hostile_checks(packages, aoti_build)
compiled = compile_package()
if compiled and aoti_build:
    pkg, x, want, program = compiled
    sandboxed_checks(pkg, x, want, program)
    trusted_checks(pkg, x, want, program)
elif compiled:
    print('skip serving the compiled package: this build\'s LibTorch is older than 2.6',
          flush=True)
elif aoti_build:
    expect('a LibTorch >= 2.6 build is tested with a compiled package (Python must compile '
           'one: python3-setuptools, python3-dev)', False)
sys.exit(summary(work))
