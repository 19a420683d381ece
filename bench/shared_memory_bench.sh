#!/usr/bin/env bash
# Triton's system shared memory against raw gRPC on the same server: ModelInfer of VGG16
# 224x224 float32, one sample per request, concurrency 16, one run of each per round,
# two rounds alternating. Reports samples/s, p50, and the CPU time per request of the
# server (/proc/<pid>/stat) and of the client (its rusage). Writes
# bench/results/shared-memory-<date>.md and prints it.
#
#   bash bench/shared_memory_bench.sh      (after `make build`; ~3 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20s}
source bench/serve_vgg16.sh  # BUILD, work, demo_store, serve_vgg16
demo_store
server_pid=""
trap '[ -n "$server_pid" ] && kill $server_pid 2>/dev/null || true' EXIT
serve_vgg16 "$work" "$work/server-shm.log" --allow_shared_memory
out="bench/results/shared-memory-$(date -u +%Y-%m-%d).md"
/usr/bin/python3 - "$BUILD/client/model-client" "$target" "$server_pid" "$DURATION" "$work" > "$out" <<'PY'
import datetime, json, os, resource, subprocess, sys
client, target, pid, duration, work = sys.argv[1:]
tick = os.sysconf("SC_CLK_TCK")

def server_cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick  # utime + stime

def run(mode, rnd):
    path = f"{work}/shm-{mode}-{rnd}.json"
    before_s, before_c = server_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([client, "--target", target, "--protocol", "v2", "bench", "--model", "vgg16",
                    "--shape", "3,224,224", "--concurrency", "16", "--duration", duration,
                    "--warmup", "0s", "--shared_memory", mode, "--json", path],
                   check=True, stdout=subprocess.DEVNULL)
    after_c = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = json.load(open(path))[0]
    client_cpu = (after_c.ru_utime - before_c.ru_utime) + (after_c.ru_stime - before_c.ru_stime)
    n = max(1, r["requests"])
    return r, (server_cpu() - before_s) / n * 1000, client_cpu / n * 1000

cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
print("# System shared memory vs raw gRPC (ModelInfer), VGG16 on CPU\n")
print(f"- date: {datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ}")
print(f"- machine: {os.cpu_count()} cores, {cpu}; Debian 12, LibTorch 1.13.1 (Debian)")
print(f"- command: `bash bench/shared_memory_bench.sh` (`model-client --protocol v2 bench "
      f"--concurrency 16 --duration {duration} --shared_memory none|system`, one 3x224x224 "
      "float32 sample (602,112 bytes) per request, server defaults + `--allow_shared_memory`; "
      "two rounds, raw then shared memory each round)")
print("- CPU ms per request: the process's user + system time over the level / requests answered "
      "(the server's includes VGG16's forward pass, shared by the batch)\n")
print("| round | transport | samples/s | p50 ms | server CPU ms/request | client CPU ms/request |")
print("| ---: | --- | ---: | ---: | ---: | ---: |")
for rnd in (1, 2):
    for mode in ("none", "system"):
        r, s_cpu, c_cpu = run(mode, rnd)
        name = "raw gRPC" if mode == "none" else "system shared memory"
        print(f"| {rnd} | {name} | {r['samples_per_second']:.2f} | {r['p50_ms']:.1f} | "
              f"{s_cpu:.1f} | {c_cpu:.2f} |")
PY
cat "$out"
