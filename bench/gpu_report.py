#!/usr/bin/env python3
"""Tables for bench/gpu_check.sh: per mode, Python eager and raw LibTorch at batch 32,
and the real server through gRPC (model-client bench) at c1/c16/c64 x 1 sample and
c4 x 32 samples, with each level's mean batch size (from /metrics) and its ratio to raw;
the goals of issue 26 (c64 x 1 >= 0.8x raw, c4 x 32 >= 0.9x raw) marked.
  gpu_report.py MACHINE PYTHON.jsonl RAW.jsonl SERVED.jsonl"""
import json
import sys

machine, python_path, raw_path, served_path = sys.argv[1:5]


def lines(path):
    return [json.loads(l) for l in open(path) if l.strip().startswith('{')]


py = {d['mode']: d['samples_per_s'] for d in lines(python_path) if d.get('what') == 'python'}
raw = {d['mode']: d['samples_per_s'] for d in lines(raw_path) if d.get('what') == 'raw'}
served = {}
for d in lines(served_path):
    served[(d['mode'], d['concurrency'], d['request_batch'])] = d
PY_NAME = {'fp32:contiguous': 'fp32', 'fp32:channels_last': 'fp32_channels_last',
           'fp16:channels_last': 'fp16_channels_last', 'bf16:channels_last': 'bf16_channels_last'}
print(f'### {machine}: VGG16 224x224, served through gRPC\n')
print('Samples/s. Raw = LibTorch on device tensors at batch 32; served = model-server '
      '(batches up to 32, 2 workers) under `model-client bench`; in parentheses the mean '
      'batch size and the ratio to raw.\n')
print('| mode | Python eager b32 | raw b32 | c1 x 1 (p50 ms) | c16 x 1 | c64 x 1 | c4 x 32 | goals |')
print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |')
modes = sorted({m for m, _, _ in served}, key=list(PY_NAME).index if all(m in PY_NAME for m, _, _ in served) else str)
for mode in modes:
    r = raw.get(mode, 0)
    cells = []
    for c, per in ((1, 1), (16, 1), (64, 1), (4, 32)):
        d = served.get((mode, c, per))
        if d is None:
            cells.append('')
            continue
        ratio = f', {d["samples_per_s"] / r:.2f}x' if r else ''
        extra = f'; p50 {d["p50_ms"]:.1f} ms' if c == 1 else ''
        errors = ' errors' if d['errors'] else ''
        cells.append(f'{d["samples_per_s"]:.1f} (b {d["mean_batch"]:.1f}{ratio}{extra}){errors}')
    goal = ''
    if r:
        c64 = served.get((mode, 64, 1), {}).get('samples_per_s', 0) / r
        c4 = served.get((mode, 4, 32), {}).get('samples_per_s', 0) / r
        goal = f'c64 {"met" if c64 >= 0.8 else "missed"}, c4x32 {"met" if c4 >= 0.9 else "missed"}'
    print(f'| {mode} | {py.get(PY_NAME.get(mode, mode), 0):.1f} | {r:.1f} | ' + ' | '.join(cells) +
          f' | {goal} |')
