#!/usr/bin/env python3
"""Markdown tables from the precision benchmark's JSON lines (precision_python.py,
precision_bench, and the CPU script's server lines), side by side with ratios.

  precision_report.py TITLE FILE.jsonl [FILE.jsonl ...]
"""
import json
import sys

title, files = sys.argv[1], sys.argv[2:]
rows = []
for f in files:
    for line in open(f):
        line = line.strip()
        if line.startswith('{'):
            rows.append(json.loads(line))

PY_NAME = {'fp32:contiguous': 'fp32', 'fp32:channels_last': 'fp32_channels_last',
           'fp16:channels_last': 'fp16_channels_last', 'bf16:channels_last': 'bf16_channels_last'}


def find(**kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def rate(rs):
    return rs[0]['samples_per_s'] if rs else None


def fmt(v, ref=None):
    if v is None:
        return ''
    s = f'{v:.2f}' if v < 100 else f'{v:.0f}'
    return f'{s} ({v / ref:.2f}x)' if ref else s


modes = []
for r in rows:
    if r.get('what') in ('load', 'raw', 'served', 'server') and ':' in r['mode'] \
            and not r['mode'].startswith('sep:') and r['mode'] not in modes:
        modes.append(r['mode'])
py_fp32 = rate(find(what='python', mode='fp32'))
py_best = max(find(what='python'), key=lambda r: r['samples_per_s'], default=None)
served_cfgs = sorted({(r['concurrency'], r['request_batch']) for r in find(what='served')})
server_cfgs = sorted({r['concurrency'] for r in find(what='server')})

print(f'### {title}\n')
print('Samples/s; in parentheses the ratio to Python eager fp32 NCHW '
      f'({fmt(py_fp32)} samples/s).')
if py_best:
    print(f"Python's best mode: {py_best['mode']}, {fmt(py_best['samples_per_s'], py_fp32)}.\n")
head = ['mode', 'Python eager', 'raw LibTorch']
head += [f'served c{c} x {b}' for c, b in served_cfgs]
head += [f'server c{c}' for c in server_cfgs]
print('| ' + ' | '.join(head) + ' |')
print('|' + ' --- |' + ' ---: |' * (len(head) - 1))
for m in modes:
    cells = [m, fmt(rate(find(what='python', mode=PY_NAME.get(m, '?'))), py_fp32),
             fmt(rate(find(what='raw', mode=m)), py_fp32)]
    cells += [fmt(rate(find(what='served', mode=m, concurrency=c, request_batch=b)), py_fp32)
              for c, b in served_cfgs]
    cells += [fmt(rate(find(what='server', mode=m, concurrency=c)), py_fp32) for c in server_cfgs]
    print('| ' + ' | '.join(cells) + ' |')
for r in find(what='python'):
    if r['mode'] not in PY_NAME.values():
        print(f"| Python {r['mode']} | {fmt(r['samples_per_s'], py_fp32)} | |" +
              ' |' * (len(head) - 3))

print('\nAccuracy against Python float32 on the same 64 inputs (random-weight VGG16; '
      '"separated": its last layer rescaled so that logits are well apart):\n')
print('| mode | max abs dlogit | cosine mean | cosine min | top-1 agree | top-5 agree '
      '| separated: top-1 | separated: top-5 |')
print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
for m in modes:
    a = find(what='accuracy', mode=m)
    s = find(what='accuracy', mode='sep:' + m)
    if not a:
        continue
    a = a[0]
    line = (f"| {m} | {a['max_abs_dlogit']:.3g} | {a['cosine_mean']:.6f} | "
            f"{a['cosine_min']:.6f} | {a['top1_agree']:.3f} | {a['top5_agree']:.3f} |")
    line += f" {s[0]['top1_agree']:.3f} | {s[0]['top5_agree']:.3f} |" if s else ' | |'
    print(line)

print('\n| mode | load s | weights on device (bytes) | device allocator after load (bytes) |')
print('| --- | ---: | ---: | ---: |')
for m in modes:
    for r in find(what='load', mode=m):
        alloc = r['device_allocated_bytes']
        print(f"| {m} | {r['seconds']:.2f} | {r['parameter_bytes']} | "
              f"{alloc if alloc >= 0 else 'n/a'} |")
for r in rows:
    if 'error' in r:
        print(f"\nerror in {r['mode']}: {r['error']}")
