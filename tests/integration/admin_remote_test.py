#!/usr/bin/env python3
"""Admin RPCs from a non-loopback peer, against the real server.

The server runs in this network namespace, listening on 0.0.0.0; a client runs in a
network namespace this test creates, joined to ours by a veth pair (198.18.N.0/30,
the benchmarking range, only inside this machine), so the server sees a
non-loopback peer. Checks, with the real model-client CLI:
  - no token, no --insecure_admin: remote admin calls PERMISSION_DENIED naming the
    fix, remote Predict/list still served, loopback admin calls allowed, the store
    unchanged by a refused upload;
  - --admin_token_file: remote without a token UNAUTHENTICATED, with it allowed;
  - --insecure_admin: remote admin calls allowed, and the startup warning logged.
Needs root (ip netns); exits 77 (skipped, with the reason) where it cannot make one.
Usage: admin_remote_test.py SERVER_BIN CLIENT_BIN TMP_DIR
"""
import os
import subprocess
import sys
import tempfile
import time

SKIP = 77
server_bin, client_bin, tmp_root = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(tmp_root, exist_ok=True)
suffix = str(os.getpid() % 100000)
ns = f'msadm{suffix}'
veth_host, veth_ns = f'vmh{suffix}', f'vmn{suffix}'
octet = os.getpid() % 250 + 1
host_ip, ns_ip = f'198.18.{octet}.1', f'198.18.{octet}.2'
env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
failures = []
passed = 0


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def setup_netns():
    sh('ip', 'netns', 'add', ns)
    sh('ip', 'link', 'add', veth_host, 'type', 'veth', 'peer', 'name', veth_ns)
    sh('ip', 'link', 'set', veth_ns, 'netns', ns)
    sh('ip', 'addr', 'add', f'{host_ip}/30', 'dev', veth_host)
    sh('ip', 'link', 'set', veth_host, 'up')
    sh('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', f'{ns_ip}/30', 'dev', veth_ns)
    sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', veth_ns, 'up')
    sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up')


def teardown_netns():
    try:
        sh('ip', 'link', 'del', veth_host, check=False)
        sh('ip', 'netns', 'del', ns, check=False)
    except FileNotFoundError:
        pass


class Server:
    def __init__(self, store, *flags):
        self.dir = tempfile.mkdtemp(dir=tmp_root)
        port_file = os.path.join(self.dir, 'port')
        self.log_path = os.path.join(self.dir, 'server.log')
        self.proc = subprocess.Popen(
            [server_bin, '--store', store, '--listen', '0.0.0.0:0', '--metrics_listen', '', '--http_listen', '',
             '--port_file', port_file, '--shutdown_grace_seconds', '0', *flags],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, 'w'), env=env)
        for _ in range(300):
            if os.path.exists(port_file):
                self.port = int(open(port_file).read())
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError('server did not start: ' + open(self.log_path).read())

    def log(self):
        return open(self.log_path).read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def client(target, *args, remote):
    cmd = [client_bin, '--target', target, '--timeout_ms', '10000', *args]
    if remote:
        cmd = ['ip', 'netns', 'exec', ns, *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    return r.returncode, r.stdout + r.stderr


def expect(name, condition, detail):
    global passed
    if condition:
        passed += 1
        print(f'ok   {name}')
    else:
        failures.append(name)
        print(f'FAIL {name}: {detail}')


def expect_code(name, result, code, also=''):
    rc, out = result
    expect(name, (rc != 0 if code != 'OK' else rc == 0) and (code in out or code == 'OK')
           and also in out, f'exit {rc}, expected {code} {also!r}, got: {out.strip()}')


def main():
    if os.geteuid() != 0:
        print('SKIPPED: creating a network namespace needs root')
        return SKIP
    try:
        setup_netns()
    except subprocess.CalledProcessError as e:
        teardown_netns()
        print(f'SKIPPED: cannot create a network namespace here: {e.stderr.strip()}')
        return SKIP
    except FileNotFoundError:
        print('SKIPPED: no `ip` command (Debian package iproute2)')
        return SKIP
    store = tempfile.mkdtemp(dir=tmp_root)
    upload = os.path.join(store, '..', f'upload-{suffix}.pth')
    with open(upload, 'wb') as f:
        f.write(b'not a checkpoint')
    try:
        s = Server(store)
        remote, local = f'{host_ip}:{s.port}', f'127.0.0.1:{s.port}'
        expect_code('default: remote unload refused', client(remote, 'unload', 'm', remote=True),
                    'PERMISSION_DENIED', '--admin_token_file')
        expect_code('default: remote upload refused',
                    client(remote, 'upload', 'm', '--file', upload, remote=True),
                    'PERMISSION_DENIED')
        models = [e for e in os.listdir(store) if not e.startswith('.')]  # .state: journal
        expect('default: refused upload leaves the store unchanged', models == [], models)
        expect_code('default: remote list served', client(remote, 'list', remote=True), 'OK')
        expect_code('default: loopback unload allowed (model unknown)',
                    client(local, 'unload', 'm', remote=False), 'NOT_FOUND')
        s.stop()

        token_file = os.path.join(tmp_root, f'token-{suffix}')
        with open(token_file, 'w') as f:
            f.write('s3cret\n')
        s = Server(store, '--admin_token_file', token_file)
        remote = f'{host_ip}:{s.port}'
        expect_code('token: remote without token', client(remote, 'unload', 'm', remote=True),
                    'UNAUTHENTICATED')
        expect_code('token: remote with a wrong token',
                    client(remote, '--token', 'nope', 'unload', 'm', remote=True),
                    'PERMISSION_DENIED')
        expect_code('token: remote with the token allowed (model unknown)',
                    client(remote, '--token', 's3cret', 'unload', 'm', remote=True), 'NOT_FOUND')
        s.stop()

        s = Server(store, '--insecure_admin')
        remote = f'{host_ip}:{s.port}'
        expect_code('insecure_admin: remote unload allowed (model unknown)',
                    client(remote, 'unload', 'm', remote=True), 'NOT_FOUND')
        expect('insecure_admin: startup warning', '--insecure_admin without --admin_token_file'
               in s.log(), s.log()[-500:])
        s.stop()
    finally:
        teardown_netns()
        os.remove(upload)
    print(f'{passed} passed, {len(failures)} failed')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
