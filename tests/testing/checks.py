"""Named checks for the Python integration tests: `expect` prints ok/FAIL per check (with the time since the previous one);
`summary` prints the counts and returns the exit status (1 when any check failed);
`stop` ends a server process."""
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


def stop(proc, timeout=30):
    """SIGTERM to a server process started by a test; SIGKILL if it is still there
    after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
