"""torch.export fixtures (the export/ folder of the test fixtures).

Real programs where this Python has torch.export (Debian 13's torch 2.6): a small CNN
exported with a dynamic batch dimension and saved with torch.export.save, with what
Python reads back from it (expected.json) and ep.module()(x) on a sample input.

Everywhere (torch 1.13 has no torch.export): the same CNN as a program archive built
here, record by record, in both layouts -- torch 2.6's (serialized_exported_program.json
and torch.save files) and the PT2 archive of torch >= 2.7 (archive_format, models/,
raw weight records with data/weights/model_weights_config.json) -- with the output of
the same operators called in Python. And hostile variants of it, one defect each.
"""
import copy
import io
import json
import os
import zipfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SCHEMA = {"major": 8, "minor": 2}
FLOAT, LONG = 7, 5  # the schema's ScalarType numbers


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.c(x))).mean((2, 3)))


def small_cnn():
    torch.manual_seed(11)
    m = SmallCnn().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-0.5, 0.5)
    return m


def sym(expr_name="s0", hint=2):
    return {"as_expr": {"expr_str": f"Symbol('{expr_name}', positive=True, integer=True)",
                        "hint": {"as_int": hint}}}


def meta(dtype, sizes, requires_grad=False):
    strides, acc = [], 1
    for s in reversed(sizes):
        strides.insert(0, acc if isinstance(s, int) else {"as_int": acc})
        acc = acc * (s if isinstance(s, int) else 8)
    def si(v):
        return v if isinstance(v, dict) else {"as_int": v}
    return {"dtype": dtype, "sizes": [si(s) for s in sizes], "requires_grad": requires_grad,
            "device": {"type": "cpu"}, "strides": [si(s) for s in strides],
            "storage_offset": {"as_int": 0}, "layout": 7}


def tensor(name):
    return {"as_tensor": {"name": name}}


def node(target, inputs, outputs):
    return {"target": target, "inputs": [{"name": n, "arg": a} for n, a in inputs],
            "outputs": outputs, "metadata": {}}


# The graph parameters' names, as torch.export 2.6 names them, and their state-dict keys.
PARAMS = [("p_c_weight", "c.weight"), ("p_c_bias", "c.bias"), ("p_bn_weight", "bn.weight"),
          ("p_bn_bias", "bn.bias"), ("p_fc_weight", "fc.weight"), ("p_fc_bias", "fc.bias")]
BUFFERS = [("b_bn_running_mean", "bn.running_mean"), ("b_bn_running_var", "bn.running_var"),
           ("b_bn_num_batches_tracked", "bn.num_batches_tracked")]


def program_json(m):
    """The program torch.export 2.6 writes for SmallCnn with a dynamic batch, by hand."""
    sd = m.state_dict()
    values = {}
    for g, k in PARAMS:
        values[g] = meta(FLOAT, list(sd[k].shape), True)
    for g, k in BUFFERS:
        values[g] = meta(LONG if k.endswith("tracked") else FLOAT, list(sd[k].shape))
    values["x"] = meta(FLOAT, [sym(), 3, 8, 8])
    values["conv2d"] = meta(FLOAT, [sym(), 4, 8, 8])
    values["batch_norm"] = meta(FLOAT, [sym(), 4, 8, 8])
    values["relu"] = meta(FLOAT, [sym(), 4, 8, 8])
    values["mean"] = meta(FLOAT, [sym(), 4])
    values["linear"] = meta(FLOAT, [sym(), 2])
    nodes = [
        node("torch.ops.aten.conv2d.default",
             [("input", tensor("x")), ("weight", tensor("p_c_weight")),
              ("bias", tensor("p_c_bias")), ("stride", {"as_ints": [1, 1]}),
              ("padding", {"as_ints": [1, 1]})], [tensor("conv2d")]),
        node("torch.ops.aten.batch_norm.default",
             [("input", tensor("conv2d")), ("weight", tensor("p_bn_weight")),
              ("bias", tensor("p_bn_bias")), ("running_mean", tensor("b_bn_running_mean")),
              ("running_var", tensor("b_bn_running_var")), ("training", {"as_bool": False}),
              ("momentum", {"as_float": 0.1}), ("eps", {"as_float": 1e-05}),
              ("cudnn_enabled", {"as_bool": True})], [tensor("batch_norm")]),
        node("torch.ops.aten.relu.default", [("self", tensor("batch_norm"))], [tensor("relu")]),
        node("torch.ops.aten.mean.dim", [("self", tensor("relu")), ("dim", {"as_ints": [2, 3]})],
             [tensor("mean")]),
        node("torch.ops.aten.linear.default",
             [("input", tensor("mean")), ("weight", tensor("p_fc_weight")),
              ("bias", tensor("p_fc_bias"))], [tensor("linear")]),
    ]
    specs = [{"parameter": {"arg": {"name": g}, "parameter_name": k}} for g, k in PARAMS]
    specs += [{"buffer": {"arg": {"name": g}, "buffer_name": k, "persistent": True}}
              for g, k in BUFFERS]
    specs.append({"user_input": {"arg": tensor("x")}})
    graph = {"inputs": [tensor(g) for g, _ in PARAMS + BUFFERS] + [tensor("x")],
             "outputs": [tensor("linear")], "nodes": nodes, "tensor_values": values,
             "sym_int_values": {}, "sym_bool_values": {}, "is_single_tensor_return": False,
             "custom_obj_values": {}, "sym_float_values": {}}
    return {"graph_module": {"graph": graph,
                             "signature": {"input_specs": specs,
                                           "output_specs": [{"user_output": {"arg": tensor("linear")}}]},
                             "module_call_graph": [], "metadata": {}},
            "opset_version": {"aten": 10}, "range_constraints": {"s0": {"min_val": 1, "max_val": 64}},
            "schema_version": dict(SCHEMA), "verifiers": ["TRAINING"], "torch_version": "2.6.0"}


def saved(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def write_26(path, program, state_dict, constants=None):
    """torch 2.6's torch.export.save layout: a stored zip without a root folder."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("serialized_exported_program.json", json.dumps(program))
        z.writestr("serialized_state_dict.pt", saved(state_dict))
        z.writestr("serialized_constants.pt",
                   constants if isinstance(constants, bytes) else saved(constants or {}))
        z.writestr("serialized_example_inputs.pt", saved(((torch.zeros(1),), {})))
        z.writestr("version", "8.2")


def payload_config(tensors, weights):
    config = {}
    for i, (fqn, t) in enumerate(tensors.items()):
        config[fqn] = {"path_name": f"weight_{i}" if weights else f"tensor_{i}",
                       "is_param": weights and not fqn.endswith(("running_mean", "running_var",
                                                                 "tracked")),
                       "use_pickle": False,
                       "tensor_meta": meta(FLOAT if t.dtype == torch.float32 else LONG,
                                           list(t.shape))}
    return {"config": config}


def write_pt2(path, program, state_dict, root="archive", config_edit=None):
    """The PT2 archive of torch >= 2.7: one root folder, raw weight records."""
    config = payload_config(state_dict, True)
    if config_edit:
        config_edit(config)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{root}/archive_format", "pt2")
        z.writestr(f"{root}/archive_version", "0")
        z.writestr(f"{root}/byteorder", "little")
        z.writestr(f"{root}/.data/version", "6")
        z.writestr(f"{root}/models/model.json", json.dumps(program))
        for i, t in enumerate(state_dict.values()):
            z.writestr(f"{root}/data/weights/weight_{i}", t.contiguous().numpy().tobytes())
        z.writestr(f"{root}/data/weights/model_weights_config.json", json.dumps(config))
        z.writestr(f"{root}/data/constants/model_constants_config.json", json.dumps({"config": {}}))
        z.writestr(f"{root}/data/sample_inputs/model.pt", saved(((torch.zeros(1),), {})))


def expected(m, nodes, input_specs, ranges):
    """What a reader must find: the nodes' targets, the inputs' kinds and targets, the
    range constraints, each weight's shape and first values (as Python reads them)."""
    return {"nodes": nodes, "inputs": input_specs, "ranges": ranges,
            "weights": {k: {"shape": list(v.shape),
                            "first": [float(x) for x in v.flatten()[:4].tolist()]}
                        for k, v in m.state_dict().items()}}


def write_handmade(out):
    m = small_cnn()
    prog = program_json(m)
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    sd = m.state_dict()
    with torch.no_grad():
        y = F.linear(torch.relu(F.batch_norm(F.conv2d(x, sd["c.weight"], sd["c.bias"], 1, 1),
                                             sd["bn.running_mean"], sd["bn.running_var"],
                                             sd["bn.weight"], sd["bn.bias"], False, 0.1, 1e-5)
                                ).mean((2, 3)), sd["fc.weight"], sd["fc.bias"])
        assert torch.allclose(y, m(x), atol=1e-6)
    exp = expected(m, [n["target"] for n in prog["graph_module"]["graph"]["nodes"]],
                   [["parameter", k] for _, k in PARAMS] + [["buffer", k] for _, k in BUFFERS]
                   + [["user_input", ""]], {"s0": [1, 64]})
    for layout, writer in (("handmade_26", write_26), ("handmade_pt2", write_pt2)):
        d = os.path.join(out, layout)
        os.makedirs(d, exist_ok=True)
        writer(os.path.join(d, "model.pt2"), prog, sd)
        np.save(os.path.join(d, "input.npy"), x.numpy())
        np.save(os.path.join(d, "output.npy"), y.numpy())
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(exp, f)
    # Height and width dynamic too (s1, s2 in [4, 16]); and a program exported at a
    # fixed batch of 2.
    def forward(t):
        with torch.no_grad():
            return m(t)
    hw = copy.deepcopy(prog)
    values = hw["graph_module"]["graph"]["tensor_values"]
    for name in ("x", "conv2d", "batch_norm", "relu"):
        values[name]["sizes"][2] = sym("s1", 12)
        values[name]["sizes"][3] = sym("s2", 10)
    hw["range_constraints"].update(s1={"min_val": 4, "max_val": 16},
                                   s2={"min_val": 4, "max_val": 16})
    fixed = copy.deepcopy(prog)
    for v in fixed["graph_module"]["graph"]["tensor_values"].values():
        if v["sizes"] and "as_expr" in v["sizes"][0]:
            v["sizes"][0] = {"as_int": 2}
    fixed["range_constraints"] = {}
    square = copy.deepcopy(hw)  # height and width one symbol
    for name in ("x", "conv2d", "batch_norm", "relu"):
        square["graph_module"]["graph"]["tensor_values"][name]["sizes"][3] = sym("s1", 12)
    del square["range_constraints"]["s2"]
    for name, p, shape in (("handmade_dynamic_hw", hw, (3, 3, 12, 10)), ("handmade_square", square, (2, 3, 12, 12)),
                           ("handmade_fixed_batch", fixed, (4, 3, 8, 8))):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        write_26(os.path.join(d, "model.pt2"), p, sd)
        xi = torch.randn(*shape, generator=torch.Generator().manual_seed(6))
        np.save(os.path.join(d, "input.npy"), xi.numpy())
        np.save(os.path.join(d, "output.npy"), forward(xi).numpy())
    # Symbolic sizes as torch.export writes them: sym_size, Python int arithmetic, a
    # view to [batch, 4] from them, and runtime assertions (one that holds, and one
    # that holds only for batches of at most 3: 5 samples fail it).
    symbolic = copy.deepcopy(prog)
    ns = symbolic["graph_module"]["graph"]["nodes"]

    def sym_name(name):
        return {"as_sym_int": {"as_name": name}}

    def sym_bool(name):
        return {"as_sym_bool": {"as_name": name}}
    ns[4]["inputs"][0]["arg"] = tensor("view")
    ns[4:4] = [
        node("torch.ops.aten.sym_size.int", [("self", tensor("relu")), ("dim", {"as_int": 0})],
             [sym_name("sym_size_int")]),
        node("_operator.mul", [("a", sym_name("sym_size_int")), ("b", {"as_int": 4})],
             [sym_name("mul")]),
        node("_operator.floordiv", [("a", sym_name("mul")), ("b", {"as_int": 4})],
             [sym_name("floordiv")]),
        node("_operator.ge", [("a", sym_name("floordiv")), ("b", {"as_int": 1})], [sym_bool("ge")]),
        node("torch.ops.aten._assert_scalar.default",
             [("self", sym_bool("ge")), ("assert_msg", {"as_string": "batch >= 1"})],
             [{"as_none": True}]),
        node("_operator.le", [("a", sym_name("sym_size_int")), ("b", {"as_int": 3})],
             [sym_bool("le")]),
        node("torch.ops.aten._assert_scalar.default",
             [("self", sym_bool("le")), ("assert_msg", {"as_string": "Runtime assertion failed: "
                                                                    "batch <= 3"})],
             [{"as_none": True}]),
        node("torch.ops.aten.view.default",
             [("self", tensor("mean")), ("size", {"as_sym_ints": [{"as_name": "floordiv"},
                                                                   {"as_int": 4}]})],
             [tensor("view")]),
    ]
    symbolic["graph_module"]["graph"]["tensor_values"]["view"] = meta(FLOAT, [sym(), 4])
    d = os.path.join(out, "handmade_symbolic")
    os.makedirs(d, exist_ok=True)
    write_26(os.path.join(d, "model.pt2"), symbolic, sd)
    np.save(os.path.join(d, "input.npy"), x.numpy())
    np.save(os.path.join(d, "output.npy"), y.numpy())
    # A state dict of another SmallCnn (other random weights) with the program as its
    # architecture template (architecture.pt2): what is served is the state dict's.
    torch.manual_seed(12)
    other = SmallCnn().eval()
    d = os.path.join(out, "handmade_template")
    os.makedirs(d, exist_ok=True)
    write_26(os.path.join(d, "architecture.pt2"), prog, sd)
    torch.save(other.state_dict(), os.path.join(d, "model_weights.pth"))
    np.save(os.path.join(d, "input.npy"), x.numpy())
    np.save(os.path.join(d, "output.npy"), forward_other(other, x).numpy())
    bad = other.state_dict()
    del bad["bn.running_var"]
    bad["fc.weight"] = torch.zeros(3, 4)
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, os.path.join(d, "bad_weights.pth"))
    return m, prog


def forward_other(model, x):
    with torch.no_grad():
        return model(x)


def write_hostile(out, m, prog, evil):
    """One defect each; every one must be refused at load with a message naming it."""
    d = os.path.join(out, "hostile")
    os.makedirs(d, exist_ok=True)
    sd = m.state_dict()
    nodes = lambda p: p["graph_module"]["graph"]["nodes"]  # noqa: E731

    def variant(name, edit, writer=write_26, state_dict=None, **kw):
        p = copy.deepcopy(prog)
        edit(p)
        writer(os.path.join(d, name + ".pt2"), p, sd if state_dict is None else state_dict, **kw)

    variant("future_schema", lambda p: p["schema_version"].update(major=9, minor=0))
    variant("undefined_value",
            lambda p: nodes(p)[2]["inputs"][0]["arg"]["as_tensor"].update(name="nope"))
    variant("use_before_definition",
            lambda p: nodes(p).__setitem__(slice(0, 2), [nodes(p)[1], nodes(p)[0]]))
    variant("defined_twice",
            lambda p: nodes(p)[2]["outputs"][0]["as_tensor"].update(name="conv2d"))
    # aten.from_file: reads a file (here, the password file) into a tensor.
    variant("off_allowlist", lambda p: nodes(p).insert(3, node(
        "torch.ops.aten.from_file.default",
        [("filename", {"as_string": "/etc/passwd"}), ("shared", {"as_bool": False}),
         ("size", {"as_int": 64})], [tensor("leak")])))
    variant("missing_operator", lambda p: nodes(p)[2].update(target="torch.ops.aten.not_an_operator.default"))
    variant("writes_weight", lambda p: nodes(p).insert(4, node(
        "torch.ops.aten.add_.Tensor", [("self", tensor("p_fc_bias")), ("other", tensor("p_fc_bias"))],
        [tensor("add_")])))

    def writes_view(p):
        nodes(p)[4:4] = [
            node("torch.ops.aten.t.default", [("self", tensor("p_fc_weight"))], [tensor("t")]),
            node("torch.ops.aten.mul_.Tensor", [("self", tensor("t")), ("other", tensor("p_fc_bias"))],
                 [tensor("mul_")])]
    variant("writes_view_of_weight", writes_view)
    # An in-place operator on a number the program holds (a wrapped scalar tensor).
    variant("writes_number", lambda p: nodes(p).insert(4, node(
        "torch.ops.aten.add_.Tensor", [("self", {"as_float": 1.0}), ("other", tensor("mean"))],
        [tensor("add_")])))
    # A program whose own sizes ask for 64 GiB at run time (zeros of 2^17 x 2^17): valid
    # data, refused by the forward pass's memory budget before anything is allocated.
    variant("huge_allocation", lambda p: nodes(p).insert(3, node(
        "torch.ops.aten.zeros.default",
        [("size", {"as_ints": [1 << 17, 1 << 17]})], [tensor("huge")])))
    # PT2E's operators (the server's own implementation) given arguments torch's refuse:
    # an axis past the tensor's dimensions, bounds outside the dtype's; and one of
    # torch's quantized_decomposed operators that the server does not implement.
    int8 = 2  # the export schema's ScalarType.CHAR (1 is BYTE, uint8)
    variant("pt2e_axis_out_of_range", lambda p: nodes(p).insert(3, node(
        "torch.ops.quantized_decomposed.quantize_per_channel.default",
        [("input", tensor("relu")), ("scales", tensor("p_fc_bias")),
         ("zero_points", tensor("p_fc_bias")), ("axis", {"as_int": 9}),
         ("quant_min", {"as_int": -128}), ("quant_max", {"as_int": 127}),
         ("dtype", {"as_scalar_type": int8})], [tensor("q")])))
    variant("pt2e_bounds_outside_dtype", lambda p: nodes(p).insert(3, node(
        "torch.ops.quantized_decomposed.quantize_per_tensor.default",
        [("input", tensor("relu")), ("scale", {"as_float": 0.5}), ("zero_point", {"as_int": 0}),
         ("quant_min", {"as_int": -1000}), ("quant_max", {"as_int": 127}),
         ("dtype", {"as_scalar_type": int8})], [tensor("q")])))
    variant("pt2e_unimplemented", lambda p: nodes(p).insert(3, node(
        "torch.ops.quantized_decomposed.choose_qparams.tensor",
        [("input", tensor("relu")), ("quant_min", {"as_int": -128}),
         ("quant_max", {"as_int": 127}), ("eps", {"as_float": 1e-5}),
         ("dtype", {"as_scalar_type": int8})], [tensor("qp0"), tensor("qp1")])))
    missing = dict(sd)
    del missing["fc.bias"]
    variant("missing_weight", lambda p: None, state_dict=missing)
    wrong = dict(sd)
    wrong["fc.weight"] = torch.zeros(3, 4)
    variant("wrong_shape", lambda p: None, state_dict=wrong)
    variant("custom_object_constant", lambda p: None, constants=evil)

    def huge_view(config):
        config["config"]["fc.weight"]["tensor_meta"]["sizes"] = [{"as_int": 1 << 40},
                                                                {"as_int": 1 << 40}]
        config["config"]["fc.weight"]["tensor_meta"]["strides"] = [{"as_int": 1 << 40},
                                                                  {"as_int": 1}]
    variant("overflowing_shape", lambda p: None, writer=write_pt2, config_edit=huge_view)

    def past_storage(config):
        config["config"]["fc.weight"]["tensor_meta"]["sizes"] = [{"as_int": 100},
                                                                {"as_int": 100}]
        config["config"]["fc.weight"]["tensor_meta"]["strides"] = [{"as_int": 100},
                                                                  {"as_int": 1}]
    variant("view_past_storage", lambda p: None, writer=write_pt2, config_edit=past_storage)

    def expanded(config):  # one float, viewed as 34000 x 34000 (4.6 GB once materialised)
        config["config"]["fc.bias"]["tensor_meta"]["sizes"] = [{"as_int": 34000},
                                                              {"as_int": 34000}]
        config["config"]["fc.bias"]["tensor_meta"]["strides"] = [{"as_int": 0}, {"as_int": 0}]
    variant("expanded_view", lambda p: None, writer=write_pt2, config_edit=expanded)

    # 100,000 nodes: a chain of relus between the mean and the linear layer.
    def huge(p):
        chain = [node("torch.ops.aten.relu.default", [("self", tensor("mean" if i == 0 else f"r{i - 1}"))],
                      [tensor(f"r{i}")]) for i in range(100_000)]
        ns = nodes(p)
        ns[4]["inputs"][0]["arg"]["as_tensor"]["name"] = "r99999"
        ns[4:4] = chain
    variant("huge_graph", huge)
    # An AOTInductor package's shape: native code, no program.
    with zipfile.ZipFile(os.path.join(d, "aoti_like.pt2"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("model/archive_format", "pt2")
        z.writestr("model/data/aotinductor/model/model.so", b"\x7fELF not really")


def write_real(out):
    """torch.export.save of SmallCnn with a dynamic batch (torch >= 2.6 only)."""
    m = small_cnn()
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(m, (x[:2],), dynamic_shapes={"x": {0: batch}})
    d = os.path.join(out, "real_cnn")
    os.makedirs(d, exist_ok=True)
    torch.export.save(ep, os.path.join(d, "model.pt2"))
    loaded = torch.export.load(os.path.join(d, "model.pt2"))
    with torch.no_grad():
        y = loaded.module()(x)
    kinds = {1: "user_input", 2: "parameter", 3: "buffer", 4: "tensor_constant"}
    specs = [[kinds.get(s.kind.value, str(s.kind)), s.target or ""]
             for s in loaded.graph_signature.input_specs]
    ranges = {str(k): [int(v.lower), int(v.upper)] for k, v in loaded.range_constraints.items()}
    targets = ["torch.ops." + str(n.target) for n in loaded.graph.nodes if n.op == "call_function"]
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected(m, targets, specs, ranges), f)
    np.save(os.path.join(d, "input.npy"), x.numpy())
    np.save(os.path.join(d, "output.npy"), y.numpy())


def write_aoti_shaped(out):
    """Archives laid out as AOTInductor packages (the library's bytes are not a
    library): what the torch-free package reader must accept and refuse."""
    d = os.path.join(out, "aoti")
    os.makedirs(d, exist_ok=True)
    lib = b"\x7fELF not really" * 64

    def pkg(name, files, root=""):
        with zipfile.ZipFile(os.path.join(d, name), "w", zipfile.ZIP_STORED) as z:
            z.writestr(root + "archive_format", "pt2")
            z.writestr(root + "version", "1")
            for path, data in files.items():
                z.writestr(root + path, data)

    m = "data/aotinductor/model/"
    cpu = '{"AOTI_DEVICE_KEY": "cpu"}'
    pkg("package_26.pt2", {m + "abc.so": lib, m + "abc.cpp": "//", m + "abc_metadata.json": cpu})
    pkg("package_root.pt2", {m + "abc.so": lib, m + "abc_metadata.json": cpu}, root="archive/")
    pkg("two_models_one_named_model.pt2", {m + "abc.so": lib, "data/aotinductor/other/x.so": lib})
    pkg("two_models.pt2", {"data/aotinductor/a/x.so": lib, "data/aotinductor/b/y.so": lib})
    pkg("two_libraries.pt2", {m + "a.so": lib, m + "b.so": lib})
    pkg("cpp_only.pt2", {m + "abc.cpp": "//", m + "abc_metadata.json": cpu})
    pkg("cuda.pt2", {m + "abc.so": lib, m + "abc_metadata.json": '{"AOTI_DEVICE_KEY": "cuda"}'})
    pkg("bad_metadata.pt2", {m + "abc.so": lib, m + "abc_metadata.json": '["cpu"]'})
    pkg("device_not_string.pt2", {m + "abc.so": lib,
                                  m + "abc_metadata.json": '{"AOTI_DEVICE_KEY": 7}'})


def write_export_fixtures(out_dir, evil_pickle):
    out = os.path.join(out_dir, "export")
    os.makedirs(out, exist_ok=True)
    write_aoti_shaped(out)
    m, prog = write_handmade(out)
    write_hostile(out, m, prog, evil_pickle)
    if hasattr(torch, "export") and hasattr(torch.export, "save"):
        write_real(out)
    else:
        with open(os.path.join(out, "NO_TORCH_EXPORT"), "w") as f:
            f.write(f"torch {torch.__version__} has no torch.export\n")
