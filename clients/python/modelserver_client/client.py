"""A small typed wrapper over model-server's gRPC API.

The generated stubs (modelserving/v1/model_service_pb2*.py) are written by the
build (protoc + Debian's grpc_python_plugin) next to this package, in
build/clients/python; put that directory on PYTHONPATH.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import grpc
import numpy as np

from modelserving.v1 import model_service_pb2 as pb
from modelserving.v1 import model_service_pb2_grpc as pb_grpc

_CHUNK = 1 << 20

# numpy dtype <-> the API's DataType (bfloat16 has no numpy dtype).
_TO_WIRE = {
    np.dtype(np.float32): pb.FLOAT32, np.dtype(np.float16): pb.FLOAT16,
    np.dtype(np.float64): pb.FLOAT64, np.dtype(np.uint8): pb.UINT8, np.dtype(np.int8): pb.INT8,
    np.dtype(np.int32): pb.INT32, np.dtype(np.int64): pb.INT64, np.dtype(np.bool_): pb.BOOL,
}
_FROM_WIRE = {v: k for k, v in _TO_WIRE.items()}

_FORMATS = {"model_weights.pth": pb.STATE_DICT, "model.pth": pb.PICKLED_MODULE,
            "model.pt": pb.TORCHSCRIPT, "model.pt2": pb.EXPORTED_PROGRAM}

ImageInput = Union[str, os.PathLike, bytes]


def _is_aoti_package(path: str) -> bool:
    """A model.pt2 with data/aotinductor/ records and no program: compiled code."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    def below_root(n):  # the PT2 archive of torch >= 2.7 has one root folder
        return n if n.startswith("data/") else n.partition("/")[2]
    rest = [below_root(n) for n in names]
    program = any(r.startswith("models/") or r == "serialized_exported_program.json" or
                  n == "serialized_exported_program.json" for n, r in zip(names, rest))
    return not program and any(r.startswith("data/aotinductor/") for r in rest)


class ServerError(Exception):
    """An RPC the server answered with an error: `code` is the grpc.StatusCode."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass
class Prediction:
    output: np.ndarray
    version: int
    # Per sample, the top classes as (index, probability, label); empty without top_k.
    top_k: List[List[Tuple[int, float, str]]] = field(default_factory=list)
    # The name of `output` ("output" for a model with one).
    output_name: str = "output"
    # Every output returned, by name, `output` first (several with `outputs=` or
    # `all_outputs=True` for a model that gives several).
    outputs: Dict[str, np.ndarray] = field(default_factory=dict)

    def labels(self) -> List[str]:
        """The most likely class's label (or index) of each sample."""
        return [c[0][2] or str(c[0][0]) for c in self.top_k]


def _as_array(x) -> np.ndarray:
    """numpy array from a numpy array, a torch.Tensor or nested lists."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    a = np.ascontiguousarray(np.asarray(x))
    if a.dtype == np.float64:  # numpy's default: converted, not refused
        a = a.astype(np.float32)
    if a.dtype not in _TO_WIRE:
        raise TypeError(f"dtype {a.dtype} has no wire type; use float32")
    return a


def _read(src: ImageInput) -> bytes:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    with open(src, "rb") as f:
        return f.read()


class ModelServerClient:
    """Client of one model-server (or a fleet behind `dns:///` with round robin).

    Every method raises ServerError with the server's status code and message.
    """

    def __init__(self, target: str = "localhost:50051", *, admin_token: Optional[str] = None,
                 timeout: float = 60.0, round_robin: bool = False):
        options = [("grpc.max_receive_message_length", 1 << 30),
                   ("grpc.max_send_message_length", 1 << 30)]
        if round_robin:
            options.append(("grpc.lb_policy_name", "round_robin"))
        self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.ModelServiceStub(self._channel)
        self._metadata = [("authorization", f"Bearer {admin_token}")] if admin_token else []
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request, admin=False, timeout=None):
        try:
            return method(request, timeout=timeout or self.timeout,
                          metadata=self._metadata if admin else None)
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details()) from None

    # ---- inference ----

    def predict(self, model: str, x, *, version: int = 0, top_k: int = 0,
                outputs: Sequence[str] = (), all_outputs: bool = False) -> Prediction:
        """Runs `x` (numpy array, torch.Tensor; float64 is sent as float32).

        For a model that gives several outputs (a tuple's "output0", "output1", ...;
        a dict's keys): `outputs` names those to return (the first is `output`),
        `all_outputs` returns all; by default the first."""
        a = _as_array(x)
        req = pb.PredictRequest(model_name=model, version=version, top_k=top_k,
                                output_names=list(outputs), all_outputs=all_outputs)
        req.input.shape.extend(a.shape)
        req.input.dtype = _TO_WIRE[a.dtype]
        req.input.data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        return self._prediction(self._call(self._stub.Predict, req))

    def predict_images(self, model: str, images: Sequence[ImageInput] | ImageInput, *,
                       version: int = 0, top_k: int = 5, outputs: Sequence[str] = (),
                       all_outputs: bool = False) -> Prediction:
        """Encoded images (paths or bytes; JPEG, PNG or WebP), preprocessed by the
        server as the model's version says (default: torchvision's ImageNet recipe).
        `outputs` and `all_outputs` as for predict()."""
        if isinstance(images, (str, bytes, bytearray, os.PathLike)):
            images = [images]
        req = pb.PredictRequest(model_name=model, version=version, top_k=top_k,
                                output_names=list(outputs), all_outputs=all_outputs)
        req.images.extend(_read(i) for i in images)
        return self._prediction(self._call(self._stub.Predict, req))

    @staticmethod
    def _array(t) -> np.ndarray:
        dtype = _FROM_WIRE.get(t.dtype)
        if dtype is None:
            raise TypeError(f"output dtype {pb.DataType.Name(t.dtype)} has no numpy dtype")
        return np.frombuffer(t.data, dtype=dtype.newbyteorder("<")).reshape(tuple(t.shape))

    @classmethod
    def _prediction(cls, resp) -> Prediction:
        out = cls._array(resp.output)
        name = resp.output_name or "output"
        outputs = {name: out}
        for more in resp.more_outputs:
            outputs[more.name] = cls._array(more.tensor)
        top = [[(c.index, c.probability, c.label) for c in s.classes] for s in resp.top_k]
        return Prediction(output=out, version=resp.version, top_k=top, output_name=name,
                          outputs=outputs)

    # ---- models ----

    def status(self, model: str):
        """The model's ModelStatus message (state, serving_version, store_versions, ...)."""
        return self._call(self._stub.GetModelStatus, pb.GetModelStatusRequest(model_name=model))

    def list_models(self):
        return list(self._call(self._stub.ListModels, pb.ListModelsRequest()).models)

    def load(self, model: str, version: int = 0) -> int:
        """Loads `version` (0: the newest) and waits until it serves; returns it."""
        resp = self._call(self._stub.LoadModel,
                          pb.LoadModelRequest(model_name=model, version=version), admin=True)
        return resp.status.serving_version

    def unload(self, model: str) -> None:
        self._call(self._stub.UnloadModel, pb.UnloadModelRequest(model_name=model), admin=True)

    def upload(self, model: str, path: Union[str, os.PathLike], *, format: Optional[str] = None,
               architecture: str = "", architecture_file: Union[str, os.PathLike, None] = None,
               labels: Union[str, os.PathLike, Iterable[str], None] = None,
               preprocess: Optional[dict] = None, precision: str = "",
               quantized_engine: str = "",
               calibration: Union[str, os.PathLike, None] = None) -> int:
        """Uploads a checkpoint as the model's next version; returns its number.

        format: "state_dict", "pickled_module", "torchscript", "exported_program" or
        "aoti_package" (default: from the file name the tutorial uses; model.pt2 for
        torch.export, told from an AOTInductor package by its contents). labels: a
        labels.txt path or the labels (line i = class i). preprocess: e.g.
        {"resize": 256, "crop": 224}. quantized_engine: the engine an int8 model was
        made for (torch.backends.quantized.engine then: "qnnpack", "onednn", ...).
        calibration: a float32 .npy of samples as the model takes them
        (numpy.save('samples.npy', batch)), stored as the version's calibration.npy:
        what precision="int8" is calibrated and checked on.
        """
        path = os.fspath(path)
        if format is None:
            fmt = _FORMATS.get(os.path.basename(path))
            if fmt is None:
                raise ValueError(f"cannot tell the format of {path}; pass format=")
            if fmt == pb.EXPORTED_PROGRAM and _is_aoti_package(path):
                fmt = pb.AOTI_PACKAGE
        else:
            fmt = pb.CheckpointFormat.Value(format.upper())
        header = pb.UploadHeader(model_name=model, format=fmt, architecture=architecture,
                                 precision=precision, quantized_engine=quantized_engine,
                                 size_bytes=os.path.getsize(path))
        header.sha256 = _sha256(path)
        if labels is not None:
            if isinstance(labels, (str, os.PathLike)):
                with open(labels, encoding="utf-8") as f:
                    header.labels = f.read()
            else:
                header.labels = "".join(f"{label}\n" for label in labels)
        if preprocess is not None:
            header.preprocess = json.dumps(preprocess)
        if architecture_file is not None:
            header.architecture_sha256 = _sha256(architecture_file)

        def requests():
            yield pb.UploadCheckpointRequest(header=header)
            if architecture_file is not None:
                for chunk in _chunks(architecture_file):
                    yield pb.UploadCheckpointRequest(architecture_chunk=chunk)
            if calibration is not None:
                for chunk in _chunks(calibration):
                    yield pb.UploadCheckpointRequest(calibration_chunk=chunk)
            for chunk in _chunks(path):
                yield pb.UploadCheckpointRequest(chunk=chunk)

        resp = self._call(self._stub.UploadCheckpoint, requests(), admin=True,
                          timeout=max(self.timeout, 600))
        return resp.version


def _chunks(path):
    with open(path, "rb") as f:
        while True:
            b = f.read(_CHUNK)
            if not b:
                return
            yield b


def _sha256(path) -> str:
    h = hashlib.sha256()
    for b in _chunks(path):
        h.update(b)
    return h.hexdigest()
