#!/usr/bin/python3
"""Creates the demo checkpoint store used by `make run`, the seed tutorial's way:

    model = torchvision.models.vgg16()                     # random weights (no internet here)
    torch.save(model.state_dict(), 'model_weights.pth')

With internet, pretrained weights are one change:
    model = torchvision.models.vgg16(weights='IMAGENET1K_V1')

Publishes <store>/vgg16/1/{model_weights.pth, manifest.json}. Does nothing if a
version already exists.
"""
import datetime
import hashlib
import json
import os
import sys
import tempfile

import torch
import torchvision


def publish(store, name, arch, model, source):
    model_dir = os.path.join(store, name)
    if os.path.isdir(model_dir) and any(d.isdigit() for d in os.listdir(model_dir)):
        print(f"{model_dir} already has a version; leaving it")
        return
    os.makedirs(store, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".staging-{name}-", dir=store)
    os.chmod(staging, 0o755)
    path = os.path.join(staging, "model_weights.pth")
    torch.save(model.state_dict(), path)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    manifest = {
        "format": "STATE_DICT",
        "architecture": arch,
        "file": "model_weights.pth",
        "sha256": sha,
        "size_bytes": os.path.getsize(path),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
    }
    with open(os.path.join(staging, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    os.makedirs(model_dir, exist_ok=True)
    os.rename(staging, os.path.join(model_dir, "1"))
    print(f"published {model_dir}/1 ({manifest['size_bytes']} bytes, sha256 {sha[:12]}...)")


def main():
    store = sys.argv[1] if len(sys.argv) > 1 else "model_store"
    torch.manual_seed(0)
    model = torchvision.models.vgg16()  # weights='IMAGENET1K_V1' with internet
    model.eval()
    publish(store, "vgg16", "vgg16", model, "scripts/make_demo_store.py: torchvision vgg16, random init")


if __name__ == "__main__":
    main()
