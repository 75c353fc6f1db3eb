"""The training loop shared by train.py (distillation) and finetune.py (teacher).

Output folder of a run:
  best.ckpt / best.json     the network with the best selection metric so far (+ its config)
  last.ckpt / last.json     the network at the last evaluation (+ its config)
  train_state.ckpt          the whole train cell (network, optimizer moments, loss scale) at the
                            last save, with the data loop's position inside; state.json a copy of it
  metrics.json              every evaluation: step, epoch, metrics, loss and its unweighted
                            terms (train_terms), samples/s
  run.json                  the command-line identity of the run (refuses a different run)
All files are written atomically. ``--resume`` reloads train_state.ckpt and continues
with the same data order, so an interrupted run ends where an uninterrupted one would.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import mindspore as ms
from mindspore import nn

from .checkpoint import atomic_save_checkpoint, load_into, named_params, read_checkpoint, save_network
from .config import EVAL_BATCH_SIZE, RunConfig, TrainConfig, atomic_write_text, config_path_for, get_task
from .dataset import any_length_inputs, create_dataset, dataset_size
from .glue import load_meta
from .logs import Throughput, format_duration
from .metrics import compute_metrics
from .packing import FrozenTwin
from .tinybert_model import LayerStreamed, LogitsOnly, quantized_cells

logger = logging.getLogger(__name__)


def set_context(device_target: str, device_id: int = 0, mode: str = "graph") -> None:
    if device_target not in ("CPU", "GPU", "Ascend"):
        raise ValueError(f"--device_target must be CPU, GPU or Ascend, got {device_target!r}")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        ms.set_device(device_target, device_id)
    except RuntimeError as e:
        if "Unsupported device target" in str(e):  # no GPU/Ascend runtime in this installation
            raise RuntimeError(f"--device_target {device_target}: MindSpore cannot run on {device_target} on "
                               f"this machine (it finds no {device_target} runtime: drivers and toolkit "
                               f"installed? see mindspore.cn/install); --device_target CPU runs here") from None
        # The device can be chosen only before the first kernel runs. A caller that already ran
        # kernels in this process (a test, a notebook calling main() twice) keeps its device
        # when it is the one asked for; a different one is an error, never a silent switch.
        current = (ms.get_context("device_target"), ms.get_context("device_id"))
        if current != (device_target, device_id):
            raise RuntimeError(f"this process already runs on {current[0]}:{current[1]}; "
                               f"cannot switch to {device_target}:{device_id}") from None


def prepare_output_dir(output_dir: str, identity: dict, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder; ``identity`` is what makes a run the same run."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FileExistsError(f"--output_dir {output_dir} is a file, not a folder")
    path = os.path.join(output_dir, "run.json")
    if os.path.isfile(path) and not overwrite:
        with open(path) as f:
            old = json.load(f)
        if old != identity:
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise FileExistsError(f"{output_dir} holds a different run (differs in {diff}); pass "
                                  f"--overwrite to replace it or choose another --output_dir")
        if not resume and os.path.isfile(os.path.join(output_dir, "state.json")):
            raise FileExistsError(f"{output_dir} already holds this run; pass --resume to "
                                  f"continue it or --overwrite to start again")
    elif resume:
        raise FileNotFoundError(f"--resume: {output_dir} holds no run to resume")
    if overwrite and os.path.isdir(output_dir):
        shutil.rmtree(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(path, json.dumps(identity, indent=2, sort_keys=True) + "\n")


_EVAL_VIEW = [None]


def predict_records(fn, records_dir: str, task: str, batch_size: int, dataset_type: str,
                    max_seq_length: int = None, split: str = "dev"):
    """(logits [N, num_labels], labels [N]) of ``fn`` over a whole split, no example dropped.

    fn: numpy (input_ids, input_mask, segment_ids) int32 [B, S] -> numpy logits [B, num_labels].
    The last, shorter batch is filled up to ``batch_size`` with copies of its own rows (their
    logits dropped): every call has one shape, so a graph-mode network compiles (and holds the
    memory of) one evaluation graph, not two. Copies leave every per-batch statistic as it
    was (a max over a batch is the same with rows repeated): the real rows' logits do not change."""
    data = create_dataset(records_dir, split, task, batch_size, dataset_type, training=False,
                          max_seq_length=max_seq_length)
    logits, labels = [], []
    for batch in data.create_dict_iterator(num_epochs=1, output_numpy=True):
        cols = [batch["input_ids"], batch["input_mask"], batch["segment_ids"]]  # [b, S] each
        b = len(cols[0])
        if b < batch_size:
            rows = np.arange(batch_size) % b  # [batch_size]: 0..b-1, then again
            cols = [c[rows] for c in cols]
        logits.append(np.asarray(fn(*cols))[:b])
        labels.append(batch["label_ids"])
    return np.concatenate(logits), np.concatenate(labels)


def split_metrics(fn, records_dir: str, task: str, batch_size: int, dataset_type: str,
                  max_seq_length: int = None, split: str = "dev") -> dict:
    """Metrics of ``fn`` (as for predict_records) on a whole split. On ``dev`` the task's further
    dev sets held by the records are evaluated too, their metrics prefixed (MNLI mismatched:
    ``mm_acc``, ``mm_examples``); ``select`` stays dev's."""
    held = load_meta(records_dir)["splits"]
    if split not in held:
        hint = ("dev_mm is MNLI's mismatched set (--task_name mnli)" if split == "dev_mm" else
                f"convert it with scripts/convert_glue.py --splits {split}")
        raise ValueError(f"{records_dir} holds no {split} split (it holds {', '.join(held)}); {hint}")
    metrics = compute_metrics(task, *predict_records(fn, records_dir, task, batch_size, dataset_type,
                                                     max_seq_length, split))
    if split == "dev":
        for extra, _ in get_task(task).extra_dev:
            if extra in held:
                more = compute_metrics(task, *predict_records(fn, records_dir, task, batch_size, dataset_type,
                                                              max_seq_length, extra))
                prefix = extra[len("dev_"):] + "_"
                metrics.update({prefix + k: v for k, v in more.items() if k != "select"})
    return metrics


def evaluate(net, records_dir: str, task: str, batch_size: int, dataset_type: str,
             max_seq_length: int = None, split: str = "dev", run=None) -> dict:
    """Metrics of ``net`` (a BertForSequenceClassification) on a whole split, no example dropped
    (and on the further dev sets, see split_metrics).

    run: ``net``'s RunConfig. Given for a network whose weights are quantized, its frozen twin
    (src.packing.FrozenTwin: the same outputs, no weight quantizer in the graph) is evaluated,
    layer by layer through one compiled encoder layer (tinybert_model.LayerStreamed: the same
    logits as the whole network's graph, ~0.8 GB less memory beside the training graph)."""
    was_training = net.training
    net.set_train(False)
    # The view of the last network evaluated is kept: a new cell would be compiled again at every
    # evaluation of a run. Only one is kept, so evaluated networks are not held alive after use.
    view = _EVAL_VIEW[0]  # (net, its twin or None, the cell called)
    if view is None or view[0] is not net:
        twin = FrozenTwin(net, run) if run is not None and quantized_cells(net) else None
        target = twin.network if twin else net
        # weight quantizers left (a quantized network given without its run): one graph of it all
        fwd = LogitsOnly(target) if quantized_cells(target) else LayerStreamed(target)
        view = _EVAL_VIEW[0] = (net, twin, fwd)
    elif view[1] is not None:
        view[1].refresh()  # the network's current weights, quantized
    fwd = view[2]
    from .deploy import MindsporePredictor  # numpy in, numpy out: what predict_records calls
    metrics = split_metrics(MindsporePredictor(fwd, None, "the network"), records_dir, task, batch_size,
                            dataset_type, max_seq_length, split)
    net.set_train(was_training)
    return metrics


@dataclass
class LoopSpec:
    """What fit() trains and where it writes."""
    train_cell: nn.Cell          # TrainOneStep over a loss cell
    network: nn.Cell             # the network being trained (saved as best.ckpt)
    run: RunConfig               # saved beside every checkpoint of ``network``
    tcfg: TrainConfig
    records_dir: str
    dataset_type: str
    output_dir: str
    eval_batch_size: int = EVAL_BATCH_SIZE
    rank: int = 0
    group_size: int = 1


def steps_per_epoch(records_dir: str, tcfg: TrainConfig, group_size: int = 1) -> int:
    n = dataset_size(records_dir, "train")
    steps = n // (tcfg.batch_size * group_size)
    if steps < 1:
        raise ValueError(f"{n} training examples are fewer than one global batch of "
                         f"{tcfg.batch_size * group_size}")
    return steps


def total_steps(records_dir: str, tcfg: TrainConfig, group_size: int = 1) -> int:
    total = int(math.ceil(steps_per_epoch(records_dir, tcfg, group_size) * tcfg.epochs))
    return min(total, tcfg.max_steps) if tcfg.max_steps else total


def _write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def fit(spec: LoopSpec, resume: bool = False, log_every: int = 10, stop_after: int = 0) -> dict:
    """Train, evaluating every ``eval_steps`` (or once per epoch) and at the end.

    ``stop_after`` > 0 returns after that many steps, like an interruption would (tests)."""
    t = spec.tcfg
    out = spec.output_dir
    main_rank = spec.rank == 0
    per_epoch = steps_per_epoch(spec.records_dir, t, spec.group_size)
    total = total_steps(spec.records_dir, t, spec.group_size)
    eval_every = t.eval_steps or per_epoch
    state = {"step": 0, "best": None, "best_step": None, "history": []}
    if resume:
        state = _load_train_state(spec)
        logger.info("resumed at step %d of %d (best %s)", state["step"], total, state["best"])
    state["total_steps"] = total  # step == total_steps in state.json: the run is complete
    if t.bucket_width and t.bucket_graphs == "open":
        spec.train_cell.set_inputs(*any_length_inputs(spec.run.task, t.batch_size))
    elif t.bucket_width:
        logger.info("length buckets: one static graph per length (%d lengths at most)",
                    -(-t.max_seq_length // t.bucket_width))
    spec.train_cell.set_train(True)
    step = state["step"]
    train_time = 0.0  # seconds in training steps only (evaluations excluded)
    seen = 0
    throughput = Throughput()
    loss_sum, loss_n = 0.0, 0
    names = spec.train_cell.terms  # the loss terms in use (hidden, attention, pred, gold)
    terms_sum = np.zeros(len(names))
    while step < total:
        epoch = step // per_epoch
        # A fresh pipeline per epoch, seeded by epoch: the order is reproducible on resume.
        data = create_dataset(spec.records_dir, "train", spec.run.task, t.batch_size,
                              spec.dataset_type, training=True, seed=t.seed + epoch,
                              num_shards=spec.group_size, shard_id=spec.rank,
                              max_seq_length=t.max_seq_length, bucket_width=t.bucket_width)
        skip = step - epoch * per_epoch
        if skip:
            data = data.skip(skip)
        for batch in data.create_tuple_iterator(num_epochs=1):
            t0 = time.perf_counter()
            loss, terms, overflow = spec.train_cell(*batch)
            loss = float(loss.asnumpy())
            if bool(overflow.asnumpy()):  # fp16: the step was not applied
                logger.warning("step %d: the fp16 gradients overflowed; step skipped, loss scale now %g",
                               step + 1, float(spec.train_cell.loss_scale.asnumpy()))
            train_time += time.perf_counter() - t0
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {step + 1}; lower the learning "
                                         f"rate (the last good state is {out}/train_state.ckpt)")
            step += 1
            seen += t.batch_size
            loss_sum += loss
            terms_sum += terms.asnumpy()
            loss_n += 1
            if main_rank and (step % log_every == 0 or step == total):
                rate = throughput.update(seen, train_time)  # this rank's samples/s, recent steps
                eta = (total - step) * t.batch_size / max(rate, 1e-9)
                logger.info("epoch %d step %d/%d loss %.5f (%s) %.1f samples/s ETA %s", epoch + 1,
                            step, total, loss_sum / loss_n,
                            " ".join(f"{n} {v / loss_n:.5f}" for n, v in zip(names, terms_sum)),
                            rate * spec.group_size, format_duration(eta))
            evaluated = step % eval_every == 0 or step == total or step % per_epoch == 0
            if evaluated:
                _evaluate_and_save(spec, state, step, epoch, loss_sum / max(loss_n, 1),
                                   seen * spec.group_size / max(train_time, 1e-9),
                                   {n: float(v) / max(loss_n, 1) for n, v in zip(names, terms_sum)})
                loss_sum, loss_n = 0.0, 0
                terms_sum[:] = 0.0
                spec.train_cell.set_train(True)
            if t.save_ckpt_steps and step % t.save_ckpt_steps == 0:
                _save_periodic(spec, state, step, save_state=not evaluated)
            if step >= total or step % per_epoch == 0 or step == stop_after:
                break
        if step == stop_after:
            logger.info("stopped after step %d (--stop_after)", step)
            break
    return state


_LOOP_STATE = "loop_state"  # the text entry of train_state.ckpt that holds the loop's position


def _save_train_state(spec: LoopSpec, state: dict, step: int) -> None:
    """What --resume reads: the train cell's parameters (network, optimizer moments, quantizer
    state, loss scale) and the loop's position, in ONE file replaced atomically, so a crash can
    never pair new weights with an old position; state.json is a readable copy of the position."""
    out = spec.output_dir
    state["step"] = step
    # names by path inside the train cell: stable however often the network is wrapped
    atomic_save_checkpoint([{"name": n, "data": p} for n, p in named_params(spec.train_cell).items()],
                           os.path.join(out, "train_state.ckpt"), append_dict={_LOOP_STATE: json.dumps(state)})
    _write_json(os.path.join(out, "state.json"), state)


def _load_train_state(spec: LoopSpec) -> dict:
    """Load train_state.ckpt into the train cell; returns the loop position saved with it (runs
    saved before the position was inside the checkpoint: state.json)."""
    path = os.path.join(spec.output_dir, "train_state.ckpt")
    params = read_checkpoint(path)
    saved = params.pop(_LOOP_STATE, None)
    listed_path = os.path.join(spec.output_dir, "state.json")
    listed = None
    if os.path.isfile(listed_path):
        with open(listed_path) as f:
            listed = json.load(f)
    if saved is None and listed is None:
        raise FileNotFoundError(f"--resume: {path} holds no loop position and {listed_path} does not exist")
    state = json.loads(saved) if saved is not None else listed
    if listed is not None and listed.get("step") != state["step"]:
        logger.warning("state.json (step %s) is not the position saved with %s (step %s): a save was "
                       "interrupted between the two; resuming from step %s", listed.get("step"), path,
                       state["step"], state["step"])
    load_into(spec.train_cell, params, source=path)
    return state


def _save_periodic(spec: LoopSpec, state: dict, step: int, save_state: bool) -> None:
    """--save_ckpt_step: OUT/ckpt/step-<step>.ckpt (+ .json), the newest keep_ckpt_max kept, and
    the training state unless an evaluation just saved it."""
    if spec.rank != 0:
        state["step"] = step
        return
    folder = os.path.join(spec.output_dir, "ckpt")
    save_network(spec.network, os.path.join(folder, f"step-{step:07d}.ckpt"), spec.run)
    kept = sorted(f for f in os.listdir(folder) if f.startswith("step-") and f.endswith(".ckpt"))
    for old in kept[:-spec.tcfg.keep_ckpt_max]:
        for path in (os.path.join(folder, old), config_path_for(os.path.join(folder, old))):
            if os.path.exists(path):
                os.remove(path)
    if save_state:
        _save_train_state(spec, state, step)
    logger.info("step %d: saved %s", step, os.path.join(folder, f"step-{step:07d}.ckpt"))


def _evaluate_and_save(spec: LoopSpec, state: dict, step: int, epoch: int, loss: float,
                       rate: float, terms: dict) -> None:
    """Evaluate, record the row (loss and its unweighted terms averaged since the last
    evaluation), keep best.ckpt and the training state."""
    out = spec.output_dir
    if spec.rank == 0:
        m = evaluate(spec.network, spec.records_dir, spec.run.task, spec.eval_batch_size,
                     spec.dataset_type, spec.tcfg.max_seq_length, run=spec.run)
        row = {"step": step, "epoch": round(step / steps_per_epoch(spec.records_dir, spec.tcfg,
                                                                 spec.group_size), 3),
               "train_loss": loss, "train_terms": terms, "samples_per_s": rate, **m}
        state["history"].append(row)
        improved = state["best"] is None or m["select"] > state["best"]
        if improved:
            state["best"], state["best_step"] = m["select"], step
            save_network(spec.network, os.path.join(out, "best.ckpt"), spec.run)
        logger.info("eval step %d: %s%s", step, " ".join(
            f"{k} {v:.5f}" for k, v in m.items() if isinstance(v, float)),
            " (best)" if improved else f" (best {state['best']:.5f} at step {state['best_step']})")
        _write_json(os.path.join(out, "metrics.json"), state["history"])
        save_network(spec.network, os.path.join(out, "last.ckpt"), spec.run)
        _save_train_state(spec, state, step)
    else:
        state["step"] = step
