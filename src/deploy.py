"""Deployment artifacts: write them (export.py) and run them (eval.py, predict.py).

``export_artifacts`` writes, from a trained network, next to an output base path ``out``:
  out.mindir         the FROZEN network: weights fixed at q(w) = scale * codes (no per-call
                     ternarization, no LAT curvature), 8-bit activation fake-quant kept; fp32
                     compute in MindSpore (GPU / Ascend serving, or MindSpore on CPU); with
                     calibration, fixed activation ranges as in the ONNX model
  out.onnx           the integer ONNX model (src/onnx_export.py) for ONNX Runtime on CPU
  out.tbq            the packed 2-bit file (src/packing.py)
  out.json           the RunConfig (as beside every checkpoint: eval.py and predict.py read it)
  out.manifest.json  bytes and SHA-256 of every file written: a damaged .mindir is refused
  vocab.txt          the tokenizer's vocabulary, when the checkpoint folder has one

``load_predictor(path)`` opens any of .ckpt, .tbq, .mindir, .onnx as a callable
(input_ids, input_mask, segment_ids) int32 [B, S] -> logits [B, num_labels] plus its RunConfig.
The ONNX path imports neither MindSpore nor onnx: a deployed process needs onnxruntime only.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Callable, Dict, Optional

import numpy as np

from .config import RunConfig, atomic_write_text, config_path_for, copy_vocab
from .glue import sha256_file as sha256_of

logger = logging.getLogger(__name__)

FORMATS = ("MINDIR", "ONNX", "AIR")


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupted, or not one this project wrote."""


def manifest_path(model_path: str) -> str:
    return os.path.splitext(model_path)[0] + ".manifest.json"


def write_manifest(base: str, files, extra: dict) -> str:
    """``base``.manifest.json: bytes and SHA-256 of each file (by base name), plus ``extra``."""
    entries = {os.path.basename(p): {"bytes": os.path.getsize(p), "sha256": sha256_of(p)} for p in files}
    path = base + ".manifest.json"
    atomic_write_text(path, json.dumps({"files": entries, **extra}, indent=2, sort_keys=True) + "\n")
    return path


def verify_against_manifest(path: str) -> dict:
    """Refuse ``path`` unless its manifest lists it with the same size and SHA-256; the manifest."""
    mpath = manifest_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    if not os.path.isfile(mpath):
        raise ModelFileError(f"{path}: no {os.path.basename(mpath)} beside it (export.py writes one; "
                             f"it holds the checksum that proves the file is whole)")
    with open(mpath, encoding="utf-8") as f:
        manifest = json.load(f)
    entry = manifest["files"].get(os.path.basename(path))
    if entry is None:
        raise ModelFileError(f"{path} is not listed in {mpath}")
    size = os.path.getsize(path)
    if size != entry["bytes"]:
        raise ModelFileError(f"{path}: {size} bytes, {entry['bytes']} expected: the file is truncated or "
                             f"was replaced")
    if sha256_of(path) != entry["sha256"]:
        raise ModelFileError(f"{path}: checksum mismatch: the file is corrupted")
    return manifest


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------
def export_mindir(frozen, base: str, file_format: str = "MINDIR", batch_size: int = 0,
                  seq_length: int = 0) -> str:
    """ms.export of a frozen network's logits; dynamic batch / length where the size is 0."""
    import mindspore as ms
    from .tinybert_model import LogitsOnly
    shape = [batch_size or None, seq_length or None]
    if None in shape:
        inputs = [ms.Tensor(shape=shape, dtype=ms.int32) for _ in range(3)]
    else:
        inputs = [ms.Tensor(np.zeros(shape, np.int32)) for _ in range(3)]
    frozen.set_train(False)
    ms.export(LogitsOnly(frozen), *inputs, file_name=base, file_format=file_format)
    return base + "." + file_format.lower()


def export_artifacts(net, run: RunConfig, base: str, formats=("MINDIR", "ONNX"), packed: bool = True,
                     codes: Optional[Dict[str, tuple]] = None, side_dtype: str = "fp32",
                     pack_codes: bool = True, onnx_ops: str = "onnxruntime", batch_size: int = 0,
                     seq_length: int = 0, vocab_from: Optional[str] = None, calibration=None,
                     calibration_source: str = "") -> list:
    """Write the deployment files of ``net`` (see the module docstring). Returns their paths.

    codes: the (bits, scale, codes) of the quantized weights when they are known already (a .tbq
    source); by default computed from ``net`` with quantize_weight.
    calibration: sample batches (numpy input_ids, input_mask, segment_ids); the ONNX model and the
    MINDIR then have fixed activation ranges measured on them (onnx_export.calibrate, which runs
    ONNX Runtime), described by ``calibration_source`` in the ONNX metadata and the manifest.
    Without it both keep the per-call ranges of eval.py.
    """
    from .packing import bake_ranges, freeze, quantized_tensors, save_packed, size_report
    from .tinybert_model import quantized_cells
    os.makedirs(os.path.dirname(os.path.abspath(base)) or ".", exist_ok=True)
    if calibration is not None and not {"ONNX", "MINDIR", "AIR"} & set(formats):
        raise ValueError("calibration fixes the activation ranges of the ONNX and MINDIR models, and neither "
                         "is written (add ONNX or MINDIR to the file formats)")
    trained = bool(quantized_cells(net))  # False: already frozen (rebuilt from a .tbq)
    if codes is None:
        if not trained and (run.quant.weight_bits < 32 or run.quant.embedding_bits < 32):
            raise ValueError("a frozen network needs its codes (pass those of the .tbq it came from)")
        codes = quantized_tensors(net, run.quant)
    ranges = None
    if calibration is not None:  # before any file is written: a refused calibration leaves nothing behind
        from .onnx_export import calibrate
        ranges, n = calibrate(net, run, codes, calibration, onnx_ops)
        logger.info("calibrated %d activation ranges on %s", len(ranges), calibration_source or f"{n} batches")
    written = []
    for fmt in formats:
        if fmt == "ONNX":
            from .onnx_export import export_onnx
            written.append(export_onnx(net, run, base + ".onnx", codes=codes, pack_codes=pack_codes,
                                       ops=onnx_ops, act_ranges=ranges, calibration=calibration_source))
        elif fmt in ("MINDIR", "AIR"):
            frozen = bake_ranges(freeze(net, run, act_ranges=ranges, codes=codes))
            written.append(export_mindir(frozen, base, fmt, batch_size, seq_length))
        else:
            raise ValueError(f"unknown file format {fmt!r}; one of {', '.join(FORMATS)}")
    if packed:
        save_packed(net, run, base + ".tbq", side_dtype=side_dtype, codes=codes)
        written.append(base + ".tbq")
        if trained:  # sizes of the fp32 model and of the packed file (benchmarks read it)
            atomic_write_text(base + ".size.json", json.dumps(size_report(net, base + ".tbq"), indent=2) + "\n")
            written.append(base + ".size.json")
    run.save(base + ".json")
    written.append(base + ".json")
    if vocab_from and os.path.isfile(vocab_from):
        written.append(copy_vocab(vocab_from, os.path.dirname(os.path.abspath(base))))
    extra = {"task": run.task, "quant": run.quant.name}
    if ranges is not None:
        extra["calibration"] = calibration_source or "calibrated"
    written.append(write_manifest(base, [p for p in written if not p.endswith(".json")], extra))
    return written


# ------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------
_ENV_ARENA_REGISTERED = False


def _shared_cpu_arena(ort) -> None:
    """Register, once per process, a CPU memory arena on ONNX Runtime's environment that grows by
    exactly what is asked (kSameAsRequested), for the sessions of session_options to share."""
    global _ENV_ARENA_REGISTERED
    if not _ENV_ARENA_REGISTERED:
        cfg = ort.OrtArenaCfg({"arena_extend_strategy": 1})  # 1: kSameAsRequested
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, cfg)
        _ENV_ARENA_REGISTERED = True


ARENAS = ("shared", "session", "none")


def session_options(threads: int = 0, arena: str = "shared"):
    """ONNX Runtime options for these models: buffers from an arena that grows by exactly what is
    asked (``arena="shared"``), no memory pattern. ``"session"``: the session's own arena; ``"none"``:
    no arena (benchmarks/compare_session_memory.py measures the three).

    The session's own arena rounds every extension up to a power of two and the memory pattern
    preallocates one block for all the intermediate tensors of a batch shape: both cost memory
    (MiniLM-L6, AVX2, 1 x 128, 8 x 128 and 1 x 32 in turn: peak RSS ~200 MB, 189-200 MB with the
    pattern alone, 140-144 MB with neither). With no arena at all every large tensor is mapped and
    unmapped per call, which the integer models pay for: on the Zen 5 machine the fixed-range
    students' 8 x 128 calls took 36.7-38.6 ms with no arena, 31.0-32.6 ms with the shared one
    (int8 quantize_dynamic: 29.9 and 29.2), at 131-136 MB peak either way (the session's own arena:
    153-157 MB): medians of 3 rounds of fresh processes,
    benchmarks/results/onnx_session_memory_cpu.json."""
    import onnxruntime as ort  # noqa: the caller checked it is installed
    if arena not in ARENAS:
        raise ValueError(f"arena must be one of {', '.join(ARENAS)}, got {arena!r}")
    opts = ort.SessionOptions()
    opts.enable_mem_pattern = False
    if arena == "shared":
        _shared_cpu_arena(ort)
        opts.add_session_config_entry("session.use_env_allocators", "1")
    else:
        opts.enable_cpu_mem_arena = arena == "session"
    if threads:
        opts.intra_op_num_threads = threads
    return opts


def onnx_feed(input_ids, input_mask, segment_ids) -> dict:
    """The inputs of an exported ONNX model: int32 [batch, seq] each."""
    return {"input_ids": np.asarray(input_ids, np.int32), "input_mask": np.asarray(input_mask, np.int32),
            "segment_ids": np.asarray(segment_ids, np.int32)}


class Predictor:
    """What every model file's predictor tells besides its logits: ``run`` (its RunConfig, or None
    for a network under training) and ``calibrated`` (export.py fixed its activation ranges)."""
    run: Optional[RunConfig] = None
    calibrated: bool = False

    @property
    def fixed_ranges(self) -> bool:
        """Whether an example's outputs are independent of the rest of its batch and of the batch's
        padding (up to float rounding): no per-call activation range search."""
        q = self.run.quant
        return self.calibrated or q.act_bits >= 32 or q.act_mode != "symmetric"


class OnnxPredictor(Predictor):
    """An ONNX model written by export.py, run by ONNX Runtime (no MindSpore, no onnx package)."""

    def __init__(self, path: str, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            from .onnx_export import DEPLOY_EXTRA
            raise RuntimeError(f"running {path} needs onnxruntime (pip install onnxruntime), part of "
                               f"{DEPLOY_EXTRA}") from None
        self.path = path
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"model file {path} does not exist") from None
        from .onnx_export import FORMAT, OnnxExportError, check_bytes
        try:
            check_bytes(raw, path)
        except OnnxExportError as e:
            raise ModelFileError(str(e)) from None
        opts = session_options(threads)
        try:
            self.session = ort.InferenceSession(raw, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own types for unreadable models
            raise ModelFileError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise ModelFileError(f"{path}: not an ONNX model written by export.py (format "
                                 f"{meta.get('format')!r}, expected {FORMAT!r})")
        self.run = RunConfig.from_dict(json.loads(meta["run_config"]), where=path)
        self.calibrated = "calibration" in meta

    def __call__(self, input_ids, input_mask, segment_ids) -> np.ndarray:
        return self.session.run(["logits"], onnx_feed(input_ids, input_mask, segment_ids))[0]


class MindsporePredictor(Predictor):
    """A MINDIR (verified against its manifest) or a network, called in MindSpore."""

    def __init__(self, fn: Callable, run: RunConfig, path: str, calibrated: bool = False):
        self.fn, self.run, self.path, self.calibrated = fn, run, path, calibrated

    def __call__(self, input_ids, input_mask, segment_ids) -> np.ndarray:
        import mindspore as ms
        args = [ms.Tensor(np.asarray(a, np.int32)) for a in (input_ids, input_mask, segment_ids)]
        return self.fn(*args).asnumpy()


def load_mindir(path: str) -> MindsporePredictor:
    import mindspore as ms
    from mindspore import nn
    manifest = verify_against_manifest(path)
    run = RunConfig.load(config_path_for(path))
    try:
        graph = nn.GraphCell(ms.load(path))
    except (RuntimeError, ValueError) as e:
        raise ModelFileError(f"{path}: MindSpore cannot load it ({str(e).splitlines()[0][:200]})") from None
    return MindsporePredictor(graph, run, path, calibrated="calibration" in manifest)


def load_network_any(path: str):
    """(network, RunConfig) from a .ckpt (config .json beside it) or a packed .tbq file."""
    if path.endswith(".tbq"):
        from .packing import load_packed
        return load_packed(path)
    from .checkpoint import load_network
    return load_network(path)


def load_predictor(path: str, threads: int = 0):
    """A callable model of any kind this project writes, with its RunConfig as ``.run``."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".onnx":
        return OnnxPredictor(path, threads)
    if ext == ".mindir":
        return load_mindir(path)
    if ext in (".ckpt", ".tbq"):
        from .tinybert_model import LogitsOnly
        net, run = load_network_any(path)
        net.set_train(False)
        return MindsporePredictor(LogitsOnly(net), run, path)
    raise ValueError(f"{path}: unknown model file type {ext!r} (expected .ckpt, .tbq, .mindir or .onnx)")
