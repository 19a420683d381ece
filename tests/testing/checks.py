"""Named checks for the Python integration tests: `expect` prints ok/FAIL per check (with the time since the previous one);
`summary` prints the counts and returns the exit status (1 when any check failed);
`start_server` starts the real server on loopback ports for a test, `stop` ends it."""
import os
import shutil
import subprocess
import time

_failures, _passed = [], [0]
_last = [time.monotonic()]


def expect(name, cond, detail=''):
    took = time.monotonic() - _last[0]
    _last[0] = time.monotonic()
    suffix = f' ({took:.2f} s since the last check)'
    if cond:
        _passed[0] += 1
        print(f'ok   {name}{suffix}', flush=True)
    else:
        _failures.append(name)
        print(f'FAIL {name}{suffix}: {detail}', flush=True)


# Set by scripts/sanitize.sh: under ASan, RSS includes its shadow memory and
# quarantine, so memory bounds are checked by the plain build only.
SANITIZED = os.environ.get('MODELSERVER_SANITIZER', '')


def expect_memory(name, cond, detail=''):
    """`expect` for a bound on resident memory; skipped (saying why) under a sanitizer."""
    if SANITIZED:
        print(f'skip {name}: RSS under {SANITIZED} includes its shadow memory and quarantine '
              f'(checked by the plain build) [{detail}]', flush=True)
        return
    expect(name, cond, detail)


def summary(*work_dirs):
    """Prints the counts; returns the exit status. With every check passed, removes
    `work_dirs` (a failed run keeps them to look at)."""
    print(f'{_passed[0]} passed, {len(_failures)} failed')
    if not _failures:
        for d in work_dirs:
            shutil.rmtree(d, ignore_errors=True)
    return 1 if _failures else 0


def code_of(fn):
    """('OK', '') when fn() returns, else the status name and message of the RPC error it
    raised (the Python client's ServerError or a grpc.RpcError); other errors propagate."""
    try:
        fn()
        return 'OK', ''
    except Exception as e:  # noqa: BLE001 -- re-raised unless it is an RPC error
        code = getattr(e, 'code', None)
        if callable(code):
            return code().name, e.details()
        if code is not None:
            return code.name, getattr(e, 'message', str(e))
        raise


def make_work(tmp_root, prefix, token):
    """A fresh work folder under `tmp_root` holding the admin token file `token`."""
    import tempfile
    os.makedirs(tmp_root, exist_ok=True)
    work = os.path.abspath(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))
    with open(os.path.join(work, 'token'), 'w') as f:
        f.write(token)
    return work


def close_to(out, want, rel=1e-5):
    """(ok, detail): `out` has `want`'s shape and is within rel x its largest |value|."""
    import numpy as np
    if out.shape != want.shape:
        return False, f'shape {out.shape}, expected {want.shape}'
    scale = float(np.abs(want).max()) or 1.0
    diff = float(np.abs(out - want).max())
    return diff <= rel * scale, f'max difference {diff:.3g} of the largest |output| {scale:.3g}'


def start_server(server_bin, work, store, tag, extra=(), http=False, env=None):
    """model-server on `store` with free loopback ports (no metrics port, no load journal,
    the admin token in work/token, forward passes up to 120 s) plus `extra` flags, its
    stderr in work/server-<tag>.log. Waits until it has written its port files, or exited.
    Returns (process, gRPC port or None, HTTP port or None, log path)."""
    port_file = os.path.join(work, f'grpc-port-{tag}')
    http_file = os.path.join(work, f'http-port-{tag}')
    log_path = os.path.join(work, f'server-{tag}.log')
    args = [server_bin, '--store', store, '--listen', '127.0.0.1:0', '--port_file', port_file,
            '--metrics_listen', '', '--state_dir', 'none', '--max_forward_seconds', '120',
            '--admin_token_file', os.path.join(work, 'token')]
    args += ['--http_listen', '127.0.0.1:0', '--http_port_file', http_file] if http else \
        ['--http_listen', '']
    files = [port_file] + ([http_file] if http else [])
    proc = subprocess.Popen(args + list(extra), stdout=subprocess.DEVNULL,
                            stderr=open(log_path, 'w'), env=env)
    for _ in range(1200):
        if all(os.path.exists(f) and os.path.getsize(f) > 0 for f in files) or \
                proc.poll() is not None:
            break
        time.sleep(0.1)
    if proc.poll() is not None:
        return proc, None, None, log_path
    return (proc, int(open(port_file).read()), int(open(http_file).read()) if http else None,
            log_path)


def stop(proc, timeout=30):
    """SIGTERM to a server process started by a test; SIGKILL if it is still there
    after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
