"""The packed ternary model file (``.tbq``): really 2-bit weights on disk.

Layout (little-endian):
  b"TBQ\\0" | uint32 version | uint64 header length | header JSON | payload | sha256(all before)
The header holds the RunConfig and one entry per tensor: name, kind, shape, offset, bytes.
Kinds:
  ternary  codes {-1,0,+1} packed base-3, 5 per byte (1.6 bits/weight; 4-per-byte 2-bit packing
           would be 25% larger: see size_report), plus float32 scales (one per matrix, or
           one per row for a row-wise embedding);
  int8     k-bit codes as int8 plus float32 scales;
  fp32/fp16  the full-precision tensors (position/token-type embeddings, LayerNorm, biases,
           classifier) in the chosen precision; activation-quantizer state always fp32.
Codes and scales come from src.quant.quantize_weight, the function training evaluated with,
and a loaded file rebuilds the network with weights = scale * codes (the same fp32 product),
so evaluation from a packed file reproduces evaluation from the checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from typing import Dict, List, Optional, Tuple

import numpy as np

from .checkpoint import CheckpointError, build_network, load_into, named_params, quant_state_names
from .config import RunConfig, atomic_write_bytes
from .quant import quantize_weight
from .tinybert_model import compute_dtype_of, quantized_cells, set_compute_dtype

MAGIC = b"TBQ\0"
VERSION = 1
_HEAD = struct.Struct("<4sIQ")
_POW3 = np.array([1, 3, 9, 27, 81], np.uint8)


class PackedFileError(ValueError):
    """A packed file is truncated, corrupted, of another version, or of another network."""


def pack_ternary(codes: np.ndarray) -> bytes:
    """{-1, 0, +1} -> base-3 digits, 5 per byte (3^5 = 243 <= 256)."""
    digits = (np.asarray(codes).reshape(-1).astype(np.int16) + 1).astype(np.uint8)
    if digits.size and (digits.max() > 2):
        raise ValueError("pack_ternary: codes must be in {-1, 0, 1}")
    pad = (-digits.size) % 5
    digits = np.concatenate([digits, np.zeros(pad, np.uint8)]).reshape(-1, 5)
    return (digits * _POW3).sum(axis=1, dtype=np.uint16).astype(np.uint8).tobytes()


def unpack_ternary(data: bytes, count: int) -> np.ndarray:
    packed = np.frombuffer(data, np.uint8)
    if packed.size != (count + 4) // 5:
        raise PackedFileError(f"ternary block has {packed.size} bytes, {(count + 4) // 5} expected")
    if packed.size and packed.max() > 242:
        raise PackedFileError("ternary block holds a byte above 242: not base-3 packed codes")
    digits = (packed[:, None] // _POW3[None, :]) % 3  # [n, 5]
    return digits.reshape(-1)[:count].astype(np.float32) - 1.0


def quantized_tensors(net, quant) -> Dict[str, Tuple[int, np.ndarray, np.ndarray]]:
    """{weight name: (bits, scale, codes)} for every quantized cell, chosen by cell type.

    The packed file, the frozen network and the ONNX export all take their weights from here.
    quantize_weight runs op by op (a function called outside a cell runs eagerly in either context
    mode), on the same CPU kernels as inside the training graph: the same bits (tested through the
    frozen MINDIR, which equals eval.py exactly), and no compiled graph keeping its buffers: a graph
    per weight shape held 3 GiB more at LAT's evaluations (its iterations over the embedding)."""
    out = {}
    for name, cell in quantized_cells(net):
        scale, codes = quantize_weight(cell.weight, cell.bits, quant, cell.granularity, cell.curvature())
        out[f"{name}.weight"] = (cell.bits, np.asarray(scale.asnumpy(), np.float32), codes.asnumpy())
    return out


def save_packed(net, run: RunConfig, path: str, side_dtype: str = "fp32", codes: dict = None) -> dict:
    """Write ``net`` (a trained student) as a packed file; returns the header.

    codes: {name: (bits, scale, codes)} when known already (a network rebuilt from a packed
    file holds q(w), not the codes); by default quantize_weight computes them from ``net``."""
    if side_dtype not in ("fp32", "fp16"):
        raise ValueError(f"side_dtype must be fp32 or fp16, got {side_dtype!r}")
    quant = codes if codes is not None else quantized_tensors(net, run.quant)
    state = quant_state_names(net)
    lat = {f"{n}.lat_d" for n, c in quantized_cells(net) if c.lat}
    entries: List[dict] = []
    blobs: List[bytes] = []
    offset = 0

    def add(entry: dict, *parts: bytes):
        nonlocal offset
        entry["offset"], entry["nbytes"] = offset, sum(len(p) for p in parts)
        entries.append(entry)
        blobs.extend(parts)
        offset += entry["nbytes"]

    for name, p in named_params(net).items():
        if name in lat:
            continue  # LAT curvature: needed to train, not to run
        if name in quant:
            bits, scale, codes = quant[name]
            scale_b = scale.astype("<f4").tobytes()
            if bits == 2:
                data = pack_ternary(codes)
                kind = "ternary"
            else:
                data = codes.astype(np.int8).tobytes()
                kind = "int8"
            add({"name": name, "kind": kind, "shape": list(codes.shape),
                 "scale_shape": list(scale.shape), "scale_bytes": len(scale_b)}, scale_b, data)
        else:
            arr = p.asnumpy()
            dt = "fp32" if (name in state or side_dtype == "fp32") else "fp16"
            data = arr.astype("<f4" if dt == "fp32" else "<f2").tobytes()
            add({"name": name, "kind": dt, "shape": list(arr.shape)}, data)
    header = {"config": run.to_dict(), "tensors": entries}
    hbytes = json.dumps(header, sort_keys=True).encode("utf-8")
    body = _HEAD.pack(MAGIC, VERSION, len(hbytes)) + hbytes + b"".join(blobs)
    atomic_write_bytes(path, body + hashlib.sha256(body).digest())
    return header


def read_packed_codes(path: str) -> Tuple[RunConfig, Dict[str, np.ndarray], Dict[str, tuple]]:
    """Validate and decode a packed file: (RunConfig, {name: float array}, {name: (bits, scale, codes)}).

    Quantized weights are in the third dict only, as the (scale, codes) quantize_weight gave."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < _HEAD.size + 32:
        raise PackedFileError(f"{path}: {len(raw)} bytes is too short to be a packed model")
    magic, version, hlen = _HEAD.unpack_from(raw, 0)
    if magic != MAGIC:
        raise PackedFileError(f"{path}: not a packed TernaryBERT file (magic {magic!r})")
    if version != VERSION:
        raise PackedFileError(f"{path}: format version {version}; this code reads version {VERSION}")
    body, digest = raw[:-32], raw[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise PackedFileError(f"{path}: checksum mismatch: the file is truncated or corrupted")
    start = _HEAD.size
    header = json.loads(body[start:start + hlen].decode("utf-8"))
    payload = memoryview(body)[start + hlen:]
    run = RunConfig.from_dict(header["config"], where=path)
    floats, codes = {}, {}
    for e in header["tensors"]:
        blob = bytes(payload[e["offset"]:e["offset"] + e["nbytes"]])
        if len(blob) != e["nbytes"]:
            raise PackedFileError(f"{path}: tensor {e['name']} runs past the end of the file")
        shape = tuple(e["shape"])
        count = int(np.prod(shape)) if shape else 1
        if e["kind"] in ("ternary", "int8"):
            scale = np.frombuffer(blob[:e["scale_bytes"]], "<f4").reshape(e["scale_shape"])
            data = blob[e["scale_bytes"]:]
            c = (unpack_ternary(data, count) if e["kind"] == "ternary"
                 else np.frombuffer(data, np.int8).astype(np.float32))
            codes[e["name"]] = (2 if e["kind"] == "ternary" else 8, scale, c.reshape(shape))
        else:
            dt = "<f4" if e["kind"] == "fp32" else "<f2"
            floats[e["name"]] = np.frombuffer(blob, dt).astype(np.float32).reshape(shape)
    return run, floats, codes


def read_packed(path: str) -> Tuple[RunConfig, Dict[str, np.ndarray]]:
    """Validate and decode a packed file: (RunConfig, {name: fp32 array of q(w) or the value})."""
    run, floats, codes = read_packed_codes(path)
    return run, {**floats, **dequantized(codes)}


def dequantized(codes: Dict[str, tuple]) -> Dict[str, np.ndarray]:
    """{name: scale * codes}: the fp32 product the training network computes."""
    return {n: (scale * c).astype(np.float32) for n, (bits, scale, c) in codes.items()}


def frozen_network(run: RunConfig, arrays: Dict[str, np.ndarray], source: str,
                   act_ranges: Optional[Dict[str, float]] = None):
    """The network with its weights fixed at q(w): no weight quantizer, no LAT curvature.

    act_ranges: {activation quantizer: m} (src.onnx_export.calibrate): every activation is then
    fake-quantized on the fixed range [-m, m] (the ``learned`` mode's quantizer, its clip set to m)
    instead of its per-batch range: the network the calibrated ONNX model computes."""
    quant = dataclasses.replace(run.quant, weights_prequantized=True)
    if act_ranges is not None:
        if run.quant.act_mode != "symmetric":
            raise ValueError(f"fixed activation ranges replace per-batch ones; act_mode "
                             f"{run.quant.act_mode!r} has no per-batch ranges")
        quant = dataclasses.replace(quant, act_mode="learned")
        arrays = {**arrays, **{f"{n}.clip": np.array([m], np.float32) for n, m in act_ranges.items()}}
    net = build_network(RunConfig(task=run.task, model=run.model, quant=quant))
    load_into(net, arrays, source=source)
    return net


def frozen_arrays(net, quant, codes: Optional[Dict[str, tuple]] = None) -> Dict[str, np.ndarray]:
    """Every tensor of ``net``'s frozen twin: q(w) for the quantized weights (from ``codes`` when
    they were computed already), the others as they are; LAT's curvature left out (the frozen
    network has no weight quantizer). An already frozen network gives its tensors as they are."""
    cells = quantized_cells(net)
    lat = {f"{n}.lat_d" for n, c in cells if c.lat}
    arrays = {n: p.asnumpy() for n, p in named_params(net).items() if n not in lat}
    if cells:
        arrays.update(dequantized(codes if codes is not None else quantized_tensors(net, quant)))
    return arrays


def freeze(net, run: RunConfig, act_ranges: Optional[Dict[str, float]] = None,
           codes: Optional[Dict[str, tuple]] = None):
    """A trained network -> its frozen twin (exactly the same outputs, no per-call ternarization);
    with ``act_ranges``, fixed activation ranges (see frozen_network); ``codes``: its quantized
    weights when computed already. An already frozen network (rebuilt from a .tbq) is returned as
    it is, or rebuilt with the ranges."""
    if act_ranges is None and not quantized_cells(net):
        return net
    return frozen_network(run, frozen_arrays(net, run.quant, codes), source="the network to freeze",
                          act_ranges=act_ranges)


def bake_ranges(net):
    """Bake every fixed activation range of a frozen network (learned or calibrated) into its graph
    as constants (ActQuant.bake_range): for the exported MINDIR, whose ranges never change.
    Returns ``net``."""
    from .quant import ActQuant
    for _, cell in net.cells_and_names():
        if isinstance(cell, ActQuant) and cell.mode == "learned":
            cell.bake_range()
    return net


class FrozenTwin:
    """The frozen twin of a network in training (``.network``), refreshed from it before each
    evaluation.

    Evaluating the twin gives the network's own outputs (the same q(w), the same activation
    quantizers) without running the weight quantizers inside the evaluation graph, which held
    2.6 GiB for LAT on length buckets (LAT's iterations over every matrix, the word embedding
    included). The twin and its graph are built once and reused; matrix products run in the
    network's compute type."""

    def __init__(self, net, run: RunConfig):
        self.net, self.run = net, run
        self.network = freeze(net, run)
        dtype = compute_dtype_of(net)
        if dtype is not None:
            set_compute_dtype(self.network, dtype)
        self.network.set_train(False)

    def refresh(self):
        """Copy the network's current weights, quantized, into the twin."""
        load_into(self.network, frozen_arrays(self.net, self.run.quant), source="the trained network")
        return self.network


def load_packed(path: str):
    """Rebuild the network of a packed file (weight quantizers left out: weights are q(w))."""
    run, arrays = read_packed(path)
    try:
        net = frozen_network(run, arrays, source=path)
    except CheckpointError as e:
        raise PackedFileError(str(e)) from None
    return net, run


def size_report(net, packed_path: str = None) -> dict:
    """Bytes of the fp32 model vs the packed file; MB = 10^6 bytes.

    Counted in the fp32 size: every parameter of the model (all embeddings, all Transformer
    weights and biases, LayerNorm, pooler, classifier); not counted: quantizer state
    (activation ranges, LAT curvature), which a float model does not have.
    """
    import os
    state = quant_state_names(net)
    params = {n: p for n, p in named_params(net).items() if n not in state}
    fp32 = sum(int(np.prod(p.shape)) * 4 for p in params.values())
    quantized = {f"{n}.weight": c for n, c in quantized_cells(net)}
    n_q = sum(int(np.prod(params[n].shape)) for n in quantized)
    report = {"fp32_bytes": fp32, "fp32_MB": fp32 / 1e6, "params": sum(
        int(np.prod(p.shape)) for p in params.values()), "quantized_params": n_q,
        "quantized_tensors": len(quantized)}
    if packed_path:
        size = os.path.getsize(packed_path)
        report.update({"packed_bytes": size, "packed_MB": size / 1e6, "ratio": fp32 / size})
    return report
