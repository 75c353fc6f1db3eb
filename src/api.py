"""The library: configs in, results out.

train.py, finetune.py, eval.py and export.py are argparse layers over these functions; a notebook
or another program calls them directly (docs/training.md has a worked example):

    from src import api
    from src.config import QuantConfig
    from src.trainer import set_context

    set_context("CPU")
    api.finetune("sts-b", "backbone.ckpt", api.Job("data/sts-b-128", "out/teacher"))
    result = api.distill("sts-b", "out/teacher/best.ckpt", api.Job("data/sts-b-128", "out/student"),
                         quant=QuantConfig(act_mode="learned"))
    print(result["best"], api.evaluate("out/student/best.ckpt", "data/sts-b-128"))
    api.export("out/student/best.ckpt", "out/export/student")

Nothing here parses argv or sets the device: the caller does (``src.trainer.set_context``), and
for data-parallel runs passes its rank and group size (``src.distributed.init_distributed``).
Training takes ``max_seq_length`` from the records (their meta.json), and the task's defaults
(batch size; for distillation learning rate, epochs, length buckets with the token-mean loss,
evaluation interval) when no TrainConfig / DistillConfig is given.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

from .config import EVAL_BATCH_SIZE, DistillConfig, QuantConfig, RunConfig, TrainConfig, get_task

logger = logging.getLogger(__name__)

FINETUNE_LR = 5e-5  # BERT fine-tuning's usual peak learning rate (finetune.py's default)


@dataclass
class Job:
    """Where a training run reads and writes, and what it does with an existing output folder."""
    data_dir: str                    # records written by scripts/convert_glue.py
    output_dir: str                  # best.ckpt, last.ckpt, metrics.json, the log, the training state
    dataset_type: str = "mindrecord"  # or tfrecord
    max_seq_length: Optional[int] = None  # the records' length, checked (None: whatever they hold)
    eval_batch_size: int = EVAL_BATCH_SIZE
    resume: bool = False             # continue the run in output_dir (refused if it is another run)
    overwrite: bool = False          # replace whatever output_dir holds
    stop_after: int = 0              # > 0: return after that many steps, as an interruption would
    # what makes two invocations the same run (compared on resume); default: the RunConfig and inputs
    identity: Optional[dict] = None


def task_train_config(task: str, distill: bool = True, **overrides) -> TrainConfig:
    """The task table's schedule: its batch size, then for distillation its learning rate, epochs,
    length buckets and evaluation interval (fine-tuning: FINETUNE_LR, padded batches), then overrides."""
    spec = get_task(task)
    base = {"batch_size": spec.batch_size, "learning_rate": spec.distill_lr if distill else FINETUNE_LR}
    if distill:
        base.update(epochs=spec.distill_epochs, bucket_width=spec.distill_bucket_width,
                    eval_steps=spec.distill_eval_steps)
    return TrainConfig(**{**base, **overrides})


def default_distill_config(train: TrainConfig) -> DistillConfig:
    """The paper's loss weights, with the hidden/attention terms over real tokens when the batches
    are length buckets (their padding varies per batch, so a mean over positions would too)."""
    return DistillConfig(token_mean=train.bucket_width > 0)


def _records(task: str, job: Job, train: TrainConfig, reads_labels: bool) -> TrainConfig:
    """Check the records; the schedule at their length."""
    from .dataset import check_records
    from .glue import check_labels_usable
    meta = check_records(job.data_dir, task, job.max_seq_length)
    check_labels_usable(job.data_dir, reads_labels)
    return dataclasses.replace(train, max_seq_length=meta["max_seq_length"])


def _vocab_beside(*models: Optional[str]) -> Optional[str]:
    """The vocab.txt beside these checkpoints (import_hf.py puts the backbone's there), or None.

    A run copies it into its folder, so that export.py, which copies the vocab.txt beside the
    checkpoint it exports, leaves it beside the deployment files for predict.py. Two different
    ones (a teacher and a student of different vocabularies) are an error."""
    from .config import vocab_path_for
    from .glue import sha256_file
    found = [p for p in (vocab_path_for(m) for m in models if m) if os.path.isfile(p)]
    for other in found[1:]:
        if sha256_file(other) != sha256_file(found[0]):
            raise ValueError(f"{found[0]} and {other} differ: the models do not share one vocabulary")
    return found[0] if found else None


def _fit(job: Job, cell, network, run: RunConfig, rank: int, group_size: int, log_name: str,
         inputs: dict, vocab: Optional[str] = None) -> dict:
    """Prepare the output folder (once every input was checked; with ``vocab`` copied into it),
    train, log the result."""
    from .config import copy_vocab
    from .logs import log_to_file
    from .trainer import LoopSpec, fit, prepare_output_dir
    if rank == 0:
        identity = job.identity or {"run": run.to_dict(), "data_dir": os.path.abspath(job.data_dir),
                                    "dataset_type": job.dataset_type, **inputs}
        prepare_output_dir(job.output_dir, identity, job.resume, job.overwrite)
        log_to_file(os.path.join(job.output_dir, log_name))
        if vocab:
            copy_vocab(vocab, job.output_dir)
    state = fit(LoopSpec(cell, network, run, run.train, job.data_dir, job.dataset_type, job.output_dir,
                         job.eval_batch_size, rank, group_size),
                resume=job.resume, stop_after=job.stop_after)
    if rank == 0 and state["best"] is not None:
        logger.info("done: best %s %.5f at step %s -> %s", run.task, state["best"], state["best_step"],
                    os.path.join(job.output_dir, "best.ckpt"))
    return state


def finetune(task: str, model: str, job: Job, train: Optional[TrainConfig] = None,
             rank: int = 0, group_size: int = 1) -> dict:
    """Fine-tune a float checkpoint (e.g. from scripts/import_hf.py) on a task: the teacher.

    Returns the training state: best (dev metric), best_step, history (every evaluation)."""
    import mindspore as ms
    from .cell_wrapper import TaskLoss, TrainOneStep, build_optimizer
    from .checkpoint import load_network
    from .trainer import total_steps
    train = _records(task, job, train or task_train_config(task, distill=False), reads_labels=True)
    vocab = _vocab_beside(model)
    ms.set_seed(train.seed)
    net, m_run = load_network(model)  # dropout as its config says (0.1 for BERT)
    if m_run.task != task:
        raise ValueError(f"{model} has a {m_run.task} head, not {task}")
    if not m_run.quant.is_float:
        raise ValueError(f"{model} is quantized ({m_run.quant.name}); fine-tune a float model")
    run = RunConfig(task=task, model=m_run.model, quant=m_run.quant, train=train)
    steps = total_steps(job.data_dir, train, group_size)
    cell = TrainOneStep(TaskLoss(net), build_optimizer(net, train, steps), train.clip_norm, tcfg=train)
    logger.info("fine-tuning %s from %s, %d steps", task, model, steps)
    return _fit(job, cell, net, run, rank, group_size, "finetune.log", inputs={"model": os.path.abspath(model)},
                vocab=vocab)


def distill(task: str, teacher: str, job: Job, student: Optional[str] = None,
            quant: Optional[QuantConfig] = None, distillation: Optional[DistillConfig] = None,
            train: Optional[TrainConfig] = None, rank: int = 0, group_size: int = 1) -> dict:
    """Distil a quantized student (2-2-8 by default) from a float teacher checkpoint.

    student: its initialisation (default: the teacher). Returns the training state as finetune."""
    import mindspore as ms
    from .cell_wrapper import DistillLoss, TrainOneStep, build_optimizer
    from .checkpoint import load_network
    from .trainer import total_steps
    quant, train = quant or QuantConfig(), train or task_train_config(task)
    distillation = distillation or default_distill_config(train)
    train = _records(task, job, train, distillation.uses_gold_labels)
    vocab = _vocab_beside(teacher, student)
    ms.set_seed(train.seed)
    t_net, t_run = load_network(teacher, dropout=0.0)
    if t_run.task != task:
        raise ValueError(f"{teacher} is a {t_run.task} model, not {task}")
    if not t_run.quant.is_float:
        raise ValueError(f"{teacher} is quantized ({t_run.quant.name}); the teacher must be full precision")
    s_net, s_run = load_network(student or teacher, quant=quant, dropout=0.0)
    if s_run.task != task:
        raise ValueError(f"{student or teacher} is a {s_run.task} model, not {task}")
    run = RunConfig(task=task, model=s_run.model, quant=quant, distill=distillation, train=train)
    steps = total_steps(job.data_dir, train, group_size)
    opt = build_optimizer(s_net, train, steps, quant)
    cell = TrainOneStep(DistillLoss(s_net, t_net, distillation), opt, train.clip_norm, s_net, quant, train)
    logger.info("distilling %s: student %s (%s), teacher %s, %d steps", task, quant.name, quant.ternarizer,
                teacher, steps)
    return _fit(job, cell, s_net, run, rank, group_size, "train.log",
                inputs={"teacher": os.path.abspath(teacher), "student": os.path.abspath(student) if student else None},
                vocab=vocab)


def evaluate(model: str, data_dir: str, split: str = "dev", batch_size: int = EVAL_BATCH_SIZE,
             dataset_type: str = "mindrecord", task: Optional[str] = None, any_length: bool = False,
             max_seq_length: Optional[int] = None) -> dict:
    """The metrics of a checkpoint, .tbq, .onnx or frozen .mindir on converted records:
    {"checkpoint", "task", "split", "quant", "data_dir", <metric>: value, ...}.

    Refuses records of another task, of another length than ``max_seq_length`` (when given), or
    of another length than the model was trained at (unless any_length)."""
    from .dataset import check_records
    from .deploy import load_predictor
    from .trainer import split_metrics
    predictor = load_predictor(model)
    run = predictor.run
    if task and task != run.task:
        raise ValueError(f"{model} is a {run.task} model, not {task}")
    meta = check_records(data_dir, run.task, max_seq_length)
    if run.train is not None and meta["max_seq_length"] != run.train.max_seq_length and not any_length:
        raise ValueError(f"{model} was trained at max_seq_length {run.train.max_seq_length} but "
                         f"{data_dir} was converted at {meta['max_seq_length']}; convert again, or pass "
                         f"--any_length to evaluate anyway")
    metrics = split_metrics(predictor, data_dir, run.task, batch_size, dataset_type, split=split)
    return {"checkpoint": os.path.abspath(model), "task": run.task, "split": split, "quant": run.quant.name,
            "data_dir": os.path.abspath(data_dir), **metrics}


def sample_batches(records_dir: str, task: str, batch_size: int, n: int, split: str = "train",
                   dataset_type: str = "mindrecord", seed: int = 0) -> list:
    """The first ``n`` batches of a seeded shuffle of a records split, as numpy (input_ids,
    input_mask, segment_ids) int32 [batch_size, S]: what export's calibration measures ranges on."""
    from .dataset import check_records, create_dataset
    splits = check_records(records_dir, task)["splits"]
    if split not in splits:
        raise ValueError(f"{records_dir} has no {split} split to calibrate on (it holds {', '.join(sorted(splits))}); "
                         f"convert it, or pick another with --calibration_split")
    data = create_dataset(records_dir, split, task, batch_size, dataset_type, training=True, seed=seed)
    batches = []
    for b in data.create_dict_iterator(num_epochs=1, output_numpy=True):
        if len(batches) == n:
            break
        batches.append((b["input_ids"], b["input_mask"], b["segment_ids"]))
    if not batches:
        raise ValueError(f"{records_dir}: the {split} split has fewer than {batch_size} examples, "
                         f"not one calibration batch")
    return batches


def export(checkpoint: str, output: str, formats: Sequence[str] = ("ONNX", "MINDIR"),
           calibration_data: Optional[str] = None, calibration_batches: int = 16,
           calibration_split: str = "train", dataset_type: str = "mindrecord", **options) -> list:
    """Write the deployment files of a .ckpt or .tbq (``src.deploy.export_artifacts``'s options:
    packed, side_dtype, pack_codes, onnx_ops, batch_size, seq_length). Returns their paths.

    calibration_data: a records folder; the symmetric activation quantizers of the ONNX model and
    the MINDIR then get fixed ranges, the largest each computes over ``calibration_batches``
    batches of its ``calibration_split`` at the training batch size (see onnx_export.calibrate)."""
    from .deploy import export_artifacts, load_network_any
    net, run = load_network_any(checkpoint)
    if checkpoint.endswith(".tbq"):  # the file's own codes: nothing is quantized again
        from .packing import read_packed_codes
        options.setdefault("codes", read_packed_codes(checkpoint)[2])
    net.set_train(False)
    if calibration_data is not None:
        batch = run.train.batch_size if run.train is not None else get_task(run.task).batch_size
        options["calibration"] = sample_batches(calibration_data, run.task, batch, calibration_batches,
                                                calibration_split, dataset_type)
        n = len(options["calibration"])
        options["calibration_source"] = (f"{n} batch{'es' if n > 1 else ''} of {batch} from the "
                                         f"{calibration_split} split of {os.path.abspath(calibration_data)}")
    vocab = _vocab_beside(checkpoint)
    if vocab is None:  # the files work without it, but predict.py cannot read text then
        logger.warning("no vocab.txt beside %s: none is written beside the exported files, so predict.py "
                       "will need --vocab_file (the backbone's vocab.txt)", checkpoint)
    return export_artifacts(net, run, output, formats=tuple(formats), vocab_from=vocab, **options)
