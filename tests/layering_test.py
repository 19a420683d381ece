#!/usr/bin/env python3
"""Checks the include rules of the README's architecture section.

Every #include of every .h/.cc file under a folder is matched against the folder's
forbidden patterns; a violation names the file, line and rule. Also checks itself:
each rule must have scanned at least one file, and a planted violation must be caught.
Usage: layering_test.py SOURCE_DIR
"""
import os
import re
import sys
import tempfile

TORCH = r'<(torch|ATen|c10|caffe2)/'
GRPC = r'<grpc(pp)?/|\.grpc\.pb\.h"|\.pb\.h"'
SERVER = r'"server/'

# folder -> [(forbidden include regex, why)]
RULES = {
    'common': [(SERVER, 'common/ is below server/'), (r'"client/', 'common/ is below client/'),
               (TORCH, 'no torch in common/'), (GRPC, 'no gRPC or protos in common/')],
    'server/util': [(TORCH, 'no torch in util/'), (GRPC, 'no gRPC in util/'),
                    (r'"server/(?!util/)', 'util/ includes no other server folder')],
    'server/checkpoint': [(TORCH, 'checkpoint/ is torch-free'), (GRPC, 'no gRPC in checkpoint/'),
                          (r'"server/(model|store|serving|service|batching|metrics)/',
                           'checkpoint/ depends on util/ only')],
    'server/store': [(r'"server/model/', 'the store never includes model/'), (TORCH, 'no torch'),
                     (GRPC, 'no gRPC in store/'),
                     (r'"server/(serving|service|batching)/', 'store/ is below serving/')],
    'server/image': [(GRPC, 'no gRPC in image/'),
                     (r'"server/(?!(util|image)/)', 'image/ depends on util/ only')],
    'server/model': [(GRPC, 'no gRPC in model/'),
                     (r'"server/(store|serving|service|batching|metrics)/', 'model/ is below them')],
    'server/batching': [(TORCH, 'no torch in batching/'), (GRPC, 'no gRPC in batching/'),
                        (r'"server/model/(?!model\.h")', 'batching/ sees only model/model.h'),
                        (r'"server/(serving|service|store)/', 'batching/ is below serving/')],
    'server/serving': [(TORCH, 'no torch in serving/'), (GRPC, 'no gRPC in serving/'),
                       (r'"server/model/(?!(model|model_loader|device|precision|replicated_model)\.h")',
                        'serving/ sees only the torch-free model headers'),
                       (r'"server/service/', 'serving/ is below service/')],
    'server/service': [(TORCH, 'no torch in service/'),
                       (r'"server/model/(?!(model|model_loader|device|precision)\.h")',
                        'service/ goes through serving/')],
    'server/sandbox': [(GRPC, 'no gRPC in sandbox/'),
                       (r'"server/(store|serving|service|batching|metrics|image)/',
                        'sandbox/ runs a Model: it sees model/ and below only')],
    'client': [(SERVER, 'the client never includes server/'), (TORCH, 'no torch in client/')],
}

INCLUDE = re.compile(r'^\s*#\s*include\s+([<"][^>"]+[>"])')


def violations(root, folder, rules):
    found, scanned = [], 0
    base = os.path.join(root, folder)
    for dirpath, _, files in os.walk(base):
        for f in files:
            if not f.endswith(('.h', '.cc')):
                continue
            scanned += 1
            path = os.path.join(dirpath, f)
            with open(path, encoding='utf-8') as fh:
                for n, line in enumerate(fh, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    for pattern, why in rules:
                        if re.search(pattern, m.group(1)):
                            found.append(f'{os.path.relpath(path, root)}:{n}: {m.group(1)} ({why})')
    return found, scanned


def main():
    root = sys.argv[1]
    failed = 0
    for folder, rules in RULES.items():
        found, scanned = violations(root, folder, rules)
        if scanned == 0:
            print(f'FAIL {folder}: no source files scanned (rule is stale)')
            failed += 1
        for v in found:
            print(f'FAIL {v}')
        failed += len(found)
    # The checker itself must catch a planted violation.
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, 'server/store'))
        with open(os.path.join(tmp, 'server/store/x.cc'), 'w') as fh:
            fh.write('#include "server/model/vgg/vgg.h"\n#include <ATen/ATen.h>\n')
        planted, _ = violations(tmp, 'server/store', RULES['server/store'])
        if len(planted) != 2:
            print(f'FAIL self-check: planted violations found {planted}')
            failed += 1
    checks = len(RULES) + 1
    print(f'{checks - min(failed, checks)} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
