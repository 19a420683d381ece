#!/usr/bin/python3
"""Writes the test fixtures: real PyTorch files saved by Debian's python3-torch, and
the outputs Python computes for them, so the C++ tests compare against Python.

usage: make_fixtures.py OUT_DIR [--no-full]

OUT_DIR/<name>/model_weights.pth   torch.save(model.state_dict(), ...)
OUT_DIR/<name>/input.npy           a random input
OUT_DIR/<name>/output.npy          model.eval()(input) in Python
OUT_DIR/<name>/arch.txt            the architecture string the server takes
Bad checkpoints (bad_*) and reader fixtures (reader/*) sit beside them.
"""
import io
import os
import pickle
import subprocess
import sys
import zipfile
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn as nn
from torchvision.models import vgg as tvgg

out_dir = sys.argv[1]
full = "--no-full" not in sys.argv
MARKER = os.path.join(os.path.abspath(out_dir), "pwned_marker")


def tiny_vgg(cfg, bn, classes, hidden, pool):
    m = tvgg.VGG(tvgg.make_layers(cfg, batch_norm=bn), num_classes=classes, init_weights=True)
    last = [c for c in cfg if c != "M"][-1]
    m.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
    m.classifier = nn.Sequential(
        nn.Linear(last * pool * pool, hidden), nn.ReLU(True), nn.Dropout(),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
        nn.Linear(hidden, classes))
    return m


def randomize_bn(m):
    # torchvision initialises running stats to 0/1, which would make eval-mode BN trivial.
    g = torch.Generator().manual_seed(7)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            mod.num_batches_tracked.fill_(123)


def write_model(name, model, arch, input_shape):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    model.eval()
    torch.save(model.state_dict(), os.path.join(d, "model_weights.pth"))
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        y = model(x)
    np.save(os.path.join(d, "input.npy"), x.numpy())
    np.save(os.path.join(d, "output.npy"), y.numpy())
    with open(os.path.join(d, "arch.txt"), "w") as f:
        f.write(arch)
    return d


def write_bad(name, state_or_bytes, arch):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model_weights.pth")
    if isinstance(state_or_bytes, (bytes, bytearray)):
        with open(path, "wb") as f:
            f.write(state_or_bytes)
    else:
        torch.save(state_or_bytes, path)
    with open(os.path.join(d, "arch.txt"), "w") as f:
        f.write(arch)


class MyNet(nn.Module):
    """A user-defined module class: its pickle names __main__.MyNet."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


class Evil:
    """Unpickling this with Python's pickle would run a shell command."""

    def __reduce__(self):
        return (os.system, ("touch " + MARKER,))


class EvilEval:
    def __reduce__(self):
        return (eval, ("open(%r, 'w').close()" % MARKER,))


class EvilPopen:
    def __reduce__(self):
        return (subprocess.Popen, (["touch", MARKER],))


class TsFromFile(nn.Module):
    """TorchScript whose forward returns the bytes of a server file (64 bytes at `path`)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x):
        data = torch.from_file(self.path, shared=False, size=64, dtype=torch.uint8)
        return data.float().unsqueeze(0).expand(x.shape[0], 64) + x.sum() * 0


class TsSetState(nn.Module):
    """TorchScript whose __setstate__ (run by torch.jit.load) overwrites 16 bytes at `path`."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.marker = torch.zeros(1)

    def forward(self, x):
        return x * 2

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.marker = torch.from_file(self.path, shared=True, size=16,
                                      dtype=torch.uint8).fill_(1).float()


class TsForever(nn.Module):
    """TorchScript whose forward never ends (a finite x always equals itself), built of
    ordinary operators only."""

    def forward(self, x):
        while bool((x == x).all()):
            x = x * 1.0
        return x


class TsHog(nn.Module):
    """TorchScript whose forward allocates 1 MiB per input column: [1, 4096] asks for
    4 GiB (ordinary operators only)."""

    def forward(self, x):
        big = torch.ones([x.shape[1], 262144])
        return x + big.sum() * 0.0


@torch.jit.script
class SetStatePayload(object):
    """A TorchScript class whose __setstate__ (run by torch.jit.load) overwrites 16 bytes
    at `path`: held as a module attribute, it is no module method."""

    def __init__(self, path: str):
        self.path = path
        self.marker = torch.zeros(1)

    def __getstate__(self) -> Tuple[str, int]:
        return (self.path, 0)

    def __setstate__(self, state: Tuple[str, int]) -> None:
        self.path = state[0]
        self.marker = torch.from_file(self.path, shared=True, size=16,
                                      dtype=torch.uint8).fill_(1).float()


class HoldsPayload(nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.payload = SetStatePayload(path)

    def forward(self, x):
        return x * 2


@torch.jit.script
class FileReader(object):
    """A TorchScript class with a method that reads a file; never called."""

    def __init__(self, path: str):
        self.path = path

    def read(self) -> torch.Tensor:
        return torch.from_file(self.path, shared=False, size=4, dtype=torch.uint8)


class HoldsReader(nn.Module):
    def __init__(self):
        super().__init__()
        self.reader = FileReader("/nonexistent")

    def forward(self, x):
        return x * 2


class MutList(nn.Module):
    """Keeps every input in a list attribute: grows by one batch per call."""

    seen: List[torch.Tensor]

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return x * 2


class MutDict(nn.Module):
    last: Dict[str, torch.Tensor]

    def __init__(self):
        super().__init__()
        self.last = {}

    def forward(self, x):
        self.last["x"] = x
        return x * 2


class MutParam(nn.Module):
    """Adds one to its weight on every call: each caller changes the next one's answer."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1), requires_grad=False)

    def forward(self, x):
        self.w.add_(1.0)
        return x * self.w


class MutBufferView(nn.Module):
    """Counts calls in a buffer through a view of it."""

    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(2))

    def forward(self, x):
        c = self.count[0:1]
        c.add_(1.0)
        return x + self.count.sum()


class MutOutArg(nn.Module):
    """Writes each input into a buffer with out=."""

    def __init__(self):
        super().__init__()
        self.register_buffer("keep", torch.zeros(1))

    def forward(self, x):
        torch.mul(x, 2.0, out=self.keep)
        return x * 2


class MutInLoop(nn.Module):
    """The buffer is carried through a loop before it is written."""

    def __init__(self):
        super().__init__()
        self.register_buffer("acc", torch.zeros(1))

    def forward(self, x):
        a = self.acc
        for _ in range(2):
            a = a.view(-1)
        a.mul_(0.5)
        return x + a


class FreshInPlace(nn.Module):
    """In-place operators and appends on its own fresh values only: allowed."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.register_buffer("b", torch.zeros(1))

    def forward(self, x):
        y = x * self.w
        y.add_(self.b)
        parts = [y]
        for _ in range(2):
            z = parts[-1].clone()
            z.relu_()
            parts.append(z)
        return torch.cat(parts, 1)


class TrainingOnlyNoise(nn.Module):
    """Draws noise into an uninitialised tensor in training mode only (torchvision's
    stochastic depth): allowed, the branch cannot run in eval mode."""

    def forward(self, x):
        if self.training:
            noise = torch.empty_like(x).bernoulli_(0.5)
            return x * noise
        return x * 2


@torch.jit.script
class Flags:
    def __init__(self):
        self.training = True

    def pick(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return torch.empty_like(x)
        return x


class ClassTraining(nn.Module):
    """A `training` field of a class object is not the module's: its branch may run."""

    def __init__(self):
        super().__init__()
        self.flags = Flags()

    def forward(self, x):
        return self.flags.pick(x)


def rewrite_code(src, dst, text=None, name=None):
    """A copy of the TorchScript archive `src` with its code records' text changed by
    `text` (bytes -> bytes) and their names by `name` (str -> str)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w', zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data, n = zin.read(info.filename), info.filename
            if '/code/' in n and n.endswith('.py'):
                data = text(data) if text else data
                n = name(n) if name else n
            zout.writestr(n, data)


# Ways to write `def __setstate__(` that LibTorch still reads as that method while a
# search for the text does not find it: (fixture name, text change, name change).
SETSTATE_SPELLINGS = [
    ('space', lambda d: d.replace(b'def __setstate__(', b'def __setstate__ ('), None),
    ('tab', lambda d: d.replace(b'def __setstate__(', b'def\t__setstate__('), None),
    ('line_break', lambda d: d.replace(b'def __setstate__(', b'def __setstate__\\\n('), None),
    ('upper_ext', None, lambda n: n[:-3] + '.PY'),
    ('upper_dir', None, lambda n: n.replace('/code/', '/CODE/')),
]


def write_sandbox_attacks():
    """sandbox/: setstate_<spelling>.pt, a module whose __setstate__ overwrites
    marker_<spelling>.bin while LibTorch loads it, written each way of SETSTATE_SPELLINGS
    that this LibTorch still runs (checked here with torch.jit.load; the names are listed
    in setstate_spellings.txt); class_setstate.pt, the same on a TorchScript class held as
    an attribute (spelled with a space; marker_class.bin); template_spaced.pt, the space
    spelling as an architecture template (marker.bin), with empty_weights.pth (its empty
    state dict); ts_hog.pt."""
    d = os.path.join(os.path.abspath(out_dir), "sandbox")
    os.makedirs(d, exist_ok=True)

    def zero(marker):
        with open(marker, "wb") as f:
            f.write(bytes(16))

    def runs_at_load(path, marker):
        zero(marker)
        try:
            torch.jit.load(path)
        except Exception:  # noqa: BLE001 -- a spelling this LibTorch does not read
            pass
        ran = open(marker, "rb").read() == bytes([1] * 16)
        zero(marker)
        return ran

    plain = os.path.join(d, "plain.pt")
    kept = []
    for name, text, rename in SETSTATE_SPELLINGS:
        marker = os.path.join(d, f"marker_{name}.bin")
        zero(marker)
        torch.jit.script(TsSetState(marker)).save(plain)
        path = os.path.join(d, f"setstate_{name}.pt")
        rewrite_code(plain, path, text, rename)
        if runs_at_load(path, marker):
            kept.append(name)
        else:
            os.remove(path)
    assert 'space' in kept, 'the spaced __setstate__ no longer runs at load'
    with open(os.path.join(d, "setstate_spellings.txt"), "w") as f:
        f.write("\n".join(kept) + "\n")
    space = SETSTATE_SPELLINGS[0][1]
    marker = os.path.join(d, "marker_class.bin")
    torch.jit.script(HoldsPayload(marker)).save(plain)
    rewrite_code(plain, os.path.join(d, "class_setstate.pt"), space)
    assert runs_at_load(os.path.join(d, "class_setstate.pt"), marker)
    marker = os.path.join(d, "marker.bin")
    zero(marker)
    torch.jit.script(TsSetState(marker)).save(plain)
    rewrite_code(plain, os.path.join(d, "template_spaced.pt"), space)
    os.remove(plain)
    torch.save({}, os.path.join(d, "empty_weights.pth"))
    torch.jit.script(TsHog()).save(os.path.join(d, "ts_hog.pt"))


def write_state_writers():
    """ts_checks/<name>.pt: modules the early operator check refuses (a class method
    reading a file; forwards that change module state) and fresh_inplace.pt, which it
    allows; refused.txt lists the refused ones with the method and operator named."""
    d = os.path.join(os.path.abspath(out_dir), "ts_checks")
    os.makedirs(d, exist_ok=True)
    refused = [("class_method", HoldsReader(), "FileReader.read aten::from_file"),
               ("list_append", MutList(), "forward aten::append"),
               ("dict_set", MutDict(), "forward aten::_set_item"),
               ("param_inplace", MutParam(), "forward aten::add_"),
               ("buffer_view", MutBufferView(), "forward aten::add_"),
               ("out_arg", MutOutArg(), "forward aten::mul"),
               ("loop_carried", MutInLoop(), "forward aten::mul_"),
               ("class_training", ClassTraining(), "forward aten::empty_like")]
    for name, module, _ in refused:
        torch.jit.script(module).save(os.path.join(d, f"{name}.pt"))
    with open(os.path.join(d, "refused.txt"), "w") as f:
        f.write("".join(f"{name} {expect}\n" for name, _, expect in refused))
    torch.jit.script(FreshInPlace()).save(os.path.join(d, "fresh_inplace.pt"))
    torch.jit.script(TrainingOnlyNoise()).save(os.path.join(d, "training_only.pt"))
    # 48 links of `t = t & t` on self.training guarding a write: the check must stay linear
    # (and the branch is not known dead, so the write is refused).
    src = os.path.join(d, "and_chain_src.py")
    with open(src, "w") as f:
        f.write("import torch\n\n\nclass AndChain(torch.nn.Module):\n"
                "    def __init__(self):\n        super().__init__()\n"
                "        self.register_buffer('n', torch.zeros(1))\n\n"
                "    def forward(self, x):\n        t = not self.training\n" +
                "".join("        t = t & t\n" for _ in range(48)) +
                "        if t:\n            self.n.add_(1.0)\n        return x\n")
    sys.path.insert(0, d)
    try:
        import and_chain_src
        torch.jit.script(and_chain_src.AndChain()).save(os.path.join(d, "and_chain.pt"))
    finally:
        sys.path.remove(d)


def write_torchscript_attacks():
    """ts_from_file reads ts_from_file/secret.bin; ts_setstate writes ts_setstate/marker.bin;
    ts_forever loops forever."""
    d = os.path.join(os.path.abspath(out_dir), "ts_forever")
    os.makedirs(d, exist_ok=True)
    torch.jit.script(TsForever()).save(os.path.join(d, "model.pt"))
    d = os.path.join(os.path.abspath(out_dir), "ts_from_file")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "secret.bin"), "wb") as f:
        f.write(b"SECRET-" * 9 + b"X")
    torch.jit.script(TsFromFile(os.path.join(d, "secret.bin"))).save(os.path.join(d, "model.pt"))
    d = os.path.join(os.path.abspath(out_dir), "ts_setstate")
    os.makedirs(d, exist_ok=True)
    marker = os.path.join(d, "marker.bin")
    with open(marker, "wb") as f:
        f.write(bytes(16))
    torch.jit.script(TsSetState(marker)).save(os.path.join(d, "model.pt"))


def save_with_location(obj, path, location):
    """torch.save, with every storage's location tag written as `location` ("cuda:0",
    "mps") as if the tensors had been on that device when saved."""
    from torch import serialization
    entry = (0, lambda storage: location, lambda obj, loc: None)
    serialization._package_registry.insert(0, entry)
    try:
        torch.save(obj, path)
    finally:
        serialization._package_registry.remove(entry)
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
        assert location.encode() in z.read(pkl), "location tag not written"


def write_templates():
    """Architecture template (torch.jit.script of a fresh instance: other weights) +
    state dict of the served instance, per tutorial network and a ResNet-18:
    tmpl_<name>/{architecture.pt, model_weights.pth, input.npy, output.npy,
    v2_model_weights.pth, v2_output.npy}; and LeNet's state dict tagged as saved on
    cuda:0 and on mps."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import template_models
    for name, (make, shape) in template_models.MODELS.items():
        d = os.path.join(out_dir, "tmpl_" + name)
        os.makedirs(d, exist_ok=True)
        torch.jit.script(make().eval()).save(os.path.join(d, "architecture.pt"))
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        np.save(os.path.join(d, "input.npy"), x.numpy())
        for prefix in ("", "v2_"):
            model = make()
            if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
                model.train()  # non-trivial running statistics
                with torch.no_grad():
                    for _ in range(3):
                        model(torch.randn(8, *shape[1:]) * 2 + 0.5)
            model.eval()
            torch.save(model.state_dict(), os.path.join(d, prefix + "model_weights.pth"))
            with torch.inference_mode():
                np.save(os.path.join(d, prefix + "output.npy"), model(x).numpy())
            if name == "lenet" and not prefix:
                for loc, tag in (("cuda:0", "cuda"), ("mps", "mps")):
                    save_with_location(model.state_dict(),
                                       os.path.join(d, f"{tag}_model_weights.pth"), loc)


def main():
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)

    tiny_arch = "vgg:cfg=8-M-16-M:classes=10:hidden=32:pool=2"
    tiny = tiny_vgg([8, "M", 16, "M"], False, 10, 32, 2)
    write_model("tiny", tiny, tiny_arch, (4, 3, 32, 32))

    # A second version of tiny: other weights, same architecture and input.
    write_model("tiny_v2", tiny_vgg([8, "M", 16, "M"], False, 10, 32, 2), tiny_arch, (4, 3, 32, 32))

    # TorchScript, scripted and traced, of the same tiny model (output: tiny's).
    for name, make in (("tiny_ts_script", lambda m, x: torch.jit.script(m)),
                       ("tiny_ts_trace", lambda m, x: torch.jit.trace(m, x))):
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        x = torch.from_numpy(np.load(os.path.join(out_dir, "tiny", "input.npy")))
        tiny.eval()
        make(tiny, x).save(os.path.join(d, "model.pt"))
        with torch.inference_mode():
            np.save(os.path.join(d, "output.npy"), tiny(x).numpy())
        np.save(os.path.join(d, "input.npy"), x.numpy())

    write_torchscript_attacks()
    write_sandbox_attacks()
    write_state_writers()
    write_templates()

    tiny_bn_arch = "vgg:cfg=8-M-16-M:bn:classes=10:hidden=32:pool=2"
    tiny_bn = tiny_vgg([8, "M", 16, "M"], True, 10, 32, 2)
    randomize_bn(tiny_bn)
    write_model("tiny_bn", tiny_bn, tiny_bn_arch, (2, 3, 24, 20))

    # Same architecture, protocol 4 pickle (FRAME, MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE).
    d = write_model("tiny_proto4", tiny, tiny_arch, (4, 3, 32, 32))
    torch.save(tiny.state_dict(), os.path.join(d, "model_weights.pth"), pickle_protocol=4)

    if full:
        vgg16 = tvgg.vgg16()
        write_model("vgg16", vgg16, "vgg16", (1, 3, 224, 224))
        vgg11_bn = tvgg.vgg11_bn()
        randomize_bn(vgg11_bn)
        write_model("vgg11_bn", vgg11_bn, "vgg11_bn", (2, 3, 64, 64))

    # Whole modules saved the seed tutorial's second way: torch.save(model).
    def write_pickled(name, model, input_shape):
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        model.eval()
        torch.save(model, os.path.join(d, "model.pth"))
        x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(3))
        with torch.inference_mode():
            y = model(x)
        np.save(os.path.join(d, "input.npy"), x.numpy())
        np.save(os.path.join(d, "output.npy"), y.numpy())

    write_pickled("pickled_tiny", tiny, (4, 3, 32, 32))
    # 64 nested Sequentials, each holding the one below twice: a few KB on disk
    # (pickle memoises), 2^64 modules if expanded.
    shared = nn.ReLU()
    for _ in range(64):
        shared = nn.Sequential(shared, shared)
    d = os.path.join(out_dir, "pickled_shared")
    os.makedirs(d, exist_ok=True)
    torch.save(shared, os.path.join(d, "model.pth"))
    seq = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=2),
        nn.ReLU(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
        nn.Dropout(0.3), nn.Linear(16, 10))
    randomize_bn(seq)
    write_pickled("pickled_seq", seq, (3, 3, 20, 20))
    if full:
        write_pickled("pickled_vgg16", tvgg.vgg16(), (1, 3, 224, 224))
        # torch.jit.script of a full VGG16.
        d = os.path.join(out_dir, "vgg16_ts_script")
        os.makedirs(d, exist_ok=True)
        v = tvgg.vgg16().eval()
        torch.jit.script(v).save(os.path.join(d, "model.pt"))
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
        with torch.inference_mode():
            np.save(os.path.join(d, "output.npy"), v(x).numpy())
        np.save(os.path.join(d, "input.npy"), x.numpy())
        vgg11_bn = tvgg.vgg11_bn()
        randomize_bn(vgg11_bn)
        write_pickled("pickled_vgg11_bn", vgg11_bn, (2, 3, 64, 64))
        # ResNet-18, scripted and traced: the operator allowlist must take both.
        from torchvision.models import resnet18
        r18 = resnet18().eval()
        for name, make in (("resnet18_ts_script", lambda: torch.jit.script(r18)),
                           ("resnet18_ts_trace",
                            lambda: torch.jit.trace(r18, torch.randn(1, 3, 64, 64)))):
            d = os.path.join(out_dir, name)
            os.makedirs(d, exist_ok=True)
            make().save(os.path.join(d, "model.pt"))
    # Refused: a user class, an os.system call nested in a module's __dict__, and one
    # smuggled through an allowed layer's BUILD state.
    for name, obj in (("pickled_userclass", MyNet()), ("pickled_evil_nested", None),
                      ("pickled_evil_setstate", None), ("pickled_evil_eval", None),
                      ("pickled_evil_popen", None)):
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        if name == "pickled_evil_nested":
            obj = nn.Sequential(nn.ReLU())
            obj.__dict__["evil"] = Evil()
        elif name in ("pickled_evil_eval", "pickled_evil_popen"):
            obj = nn.Sequential(nn.ReLU())
            obj.__dict__["evil"] = EvilEval() if name == "pickled_evil_eval" else EvilPopen()
        elif name == "pickled_evil_setstate":
            # An allowed layer (NEWOBJ) whose BUILD state (what __setstate__ would
            # apply) carries the call in place of a hyperparameter.
            relu = nn.ReLU()
            relu.__dict__["inplace"] = Evil()
            obj = nn.Sequential(relu)
        torch.save(obj, os.path.join(d, "model.pth"))

    sd = tiny.state_dict()
    missing = dict(sd)
    del missing["classifier.6.bias"]
    write_bad("bad_missing_key", missing, tiny_arch)
    wrong = dict(sd)
    wrong["features.0.weight"] = torch.zeros(8, 3, 5, 5)
    write_bad("bad_wrong_shape", wrong, tiny_arch)
    extra = dict(sd)
    extra["features.99.weight"] = torch.zeros(3)
    write_bad("bad_extra_key", extra, tiny_arch)
    buf = io.BytesIO()
    torch.save(sd, buf)
    raw = buf.getvalue()
    write_bad("bad_truncated", raw[: len(raw) // 2], tiny_arch)
    write_bad("bad_not_zip", b"this is not a checkpoint\n" * 10, tiny_arch)
    # A zip whose data.pkl calls os.system through REDUCE, as torch.save writes it.
    write_bad("bad_os_system", {"features.0.weight": Evil()}, tiny_arch)
    # A training checkpoint dict instead of a state dict.
    write_bad("bad_not_state_dict", {"epoch": 3, "model": sd}, tiny_arch)

    # Reader fixtures: every storage dtype, views, shared storages.
    r = os.path.join(out_dir, "reader")
    os.makedirs(r, exist_ok=True)
    base = torch.arange(24)
    tensors = {
        "f32": base.float().reshape(2, 3, 4),
        "f64": base.double().reshape(4, 6),
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "i64": base.long() - 12,
        "i32": base.int() - 12,
        "i16": base.short() - 12,
        "i8": base.to(torch.int8) - 12,
        "u8": base.to(torch.uint8),
        "bool": (base % 3 == 0),
        "c64": torch.complex(base.float(), -base.float()),
        "scalar": torch.tensor(7),
        "empty": torch.zeros(0, 3),
    }
    shared = base.float().reshape(4, 6)
    tensors["transposed"] = shared.t()                  # non-contiguous view
    tensors["slice"] = shared[1:3, 2:5]                 # offset + strides, same storage
    tensors["shared_full"] = shared
    tensors["expanded"] = torch.arange(3.0).expand(4, 3)  # stride 0, small: loaded
    torch.save(tensors, os.path.join(r, "dtypes.pth"))
    # A 747-byte file whose one tensor is a stride-0 [34000, 34000] view of one
    # float: 4.6 GB once materialised.
    torch.save({"weight": torch.zeros(1).expand(34000, 34000)}, os.path.join(r, "stride0.pth"))
    # Raw pickle payloads for the unpickler tests.
    with open(os.path.join(r, "plain_p2.pkl"), "wb") as f:
        pickle.dump({"a": [1, -2, 3.5, True, None], "b": ("x", b"y\xe9z", 2 ** 40, -(2 ** 40))}, f,
                    protocol=2)
    with open(os.path.join(r, "plain_p4.pkl"), "wb") as f:
        pickle.dump({"a": [1, -2, 3.5, True, None], "b": ("x", b"y\xe9z", 2 ** 40, -(2 ** 40))}, f,
                    protocol=4)
    with open(os.path.join(r, "os_system.pkl"), "wb") as f:
        pickle.dump(Evil(), f, protocol=2)
    # Zip variants for the zip reader.
    with zipfile.ZipFile(os.path.join(r, "zip64.zip"), "w", zipfile.ZIP_STORED) as z:
        with z.open("a/data.pkl", "w", force_zip64=True) as f:
            f.write(b"hello zip64")
        z.writestr("a/data/0", b"\x01\x02\x03\x04")
    with zipfile.ZipFile(os.path.join(r, "deflated.zip"), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/data.pkl", b"x" * 1000)
    # torch.export programs: real ones where torch has torch.export, built by hand
    # (both archive layouts) and hostile variants everywhere.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from export_fixtures import write_export_fixtures
    evil = io.BytesIO()
    torch.save({"lifted_tensor_0": Evil()}, evil)
    write_export_fixtures(out_dir, evil.getvalue())
    with open(os.path.join(out_dir, "DONE"), "w") as f:
        f.write("ok\n")


if __name__ == "__main__":
    main()
