"""Command-line flags shared by the entry points, and their translation into configs.

Flags follow the model_zoo style (--task_name, --device_target, --epoch_size, ...).
Booleans are real flags (--no_ste_mask), never the strings "true"/"false".
"""
from __future__ import annotations

import argparse
import logging
import os

from .api import FINETUNE_LR, Job, default_distill_config, task_train_config  # plain Python: no MindSpore
from .logs import setup_logging  # noqa: F401 - the entry points' logging set-up
from .config import (ACT_MODES, ATTENTION_LOSSES, BUCKET_GRAPHS, DEFAULT_DISTILL_EPOCHS, DEFAULT_DISTILL_LR,
                     EVAL_BATCH_SIZE, DistillConfig, QuantConfig, TrainConfig, TASKS, get_task)


def task_name(value: str) -> str:
    """argparse type: a task of the table, canonical spelling."""
    try:
        return get_task(value).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _int_at_least(minimum: int, what: str):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {n}")
        return n
    parse.__name__ = what  # argparse names the type in its messages
    parse.__doc__ = f"argparse type: an integer >= {minimum}"
    return parse


# a size or a count: 0 never silently means "the default"
positive_int = _int_at_least(1, "positive_int")
# where 0 has a documented meaning (dynamic, no cap, once per epoch)
non_negative_int = _int_at_least(0, "non_negative_int")


class _ModelZooSwitch(argparse.Action):
    """A model_zoo boolean flag (``--do_eval True``) with one meaning here: the value that matches
    this project is accepted and stores nothing; the other is refused with the reason."""

    def __init__(self, option_strings, dest, supported: bool = True, reason: str = "", **kwargs):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, metavar="{True,False}", **kwargs)
        self.supported, self.reason = supported, reason

    def __call__(self, parser, namespace, value, option_string=None):
        flag = {"true": True, "false": False}.get(str(value).lower())
        if flag is None:
            parser.error(f"argument {option_string}: expected True or False, got {value!r}")
        if flag != self.supported:
            parser.error(f"argument {option_string} {value}: {self.reason}")


class _NoEffect(argparse.Action):
    """A model_zoo option that only matters together with one this project refuses: its value is
    checked, nothing is stored."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        pass


def add_model_zoo_switches(ap: argparse.ArgumentParser) -> None:
    """model_zoo's train switches, so that its command lines run here unchanged where they mean
    what this project does, and stop with the reason where they do not."""
    ap.add_argument("--do_eval", action=_ModelZooSwitch, supported=True,
                    reason="evaluation during training is always on here (it chooses best.ckpt); "
                           "for checkpoints on a schedule use --save_ckpt_step")
    ap.add_argument("--do_shuffle", action=_ModelZooSwitch, supported=True,
                    reason="training batches are always shuffled here (seeded by --seed)")
    ap.add_argument("--enable_data_sink", action=_ModelZooSwitch, supported=False,
                    reason="there is no data sink here (MindSpore 2.10 refuses one on CPU, where this "
                           "project is tested); batches are fed by the host loop on every device")
    ap.add_argument("--data_sink_steps", type=positive_int, action=_NoEffect,
                    help="model_zoo's: accepted for its command lines, no effect (no data sink)")


def add_device_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    ap.add_argument("--device_id", type=int, default=0)
    ap.add_argument("--mode", default="graph", choices=["graph", "pynative"],
                    help="GRAPH_MODE (fast) or PYNATIVE_MODE (debugging)")


def add_task_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--task_name", required=True, type=task_name,
                    help="one of: " + ", ".join(TASKS))


def checkpoint_file(value: str) -> str:
    """argparse type: a model file. model_zoo passes folders (``--teacher_model_dir``); a folder
    holding a run's best.ckpt means that file, any other folder is refused (never "the newest file")."""
    if os.path.isdir(value):
        best = os.path.join(value, "best.ckpt")
        if os.path.isfile(best):
            return best
        raise argparse.ArgumentTypeError(f"{value} is a folder without best.ckpt; pass the checkpoint file itself")
    return value


def add_data_args(ap: argparse.ArgumentParser, batch_size_alias: bool = False) -> None:
    ap.add_argument("--data_dir", required=True,
                    help="records folder written by scripts/convert_glue.py")
    ap.add_argument("--max_seq_length", type=positive_int, default=None,
                    help="optional check: the records must have been converted at this length")
    ap.add_argument("--dataset_type", default="mindrecord", choices=["mindrecord", "tfrecord"])
    ap.add_argument("--eval_batch_size", *(["--batch_size"] if batch_size_alias else []), dest="eval_batch_size",
                    type=positive_int, default=EVAL_BATCH_SIZE)


def _task_defaults(field: str, default: float) -> str:
    """'cola 12, mrpc 6, else 3': the task table's values of a distillation default that differ."""
    return ", ".join(f"{t.name} {getattr(t, field):g}" for t in TASKS.values()
                     if getattr(t, field) != default) + f", else {default:g}"


def add_train_args(ap: argparse.ArgumentParser, distill: bool) -> None:
    """distill: the schedule flags default to the task table's distillation recipe (TaskSpec.distill_*,
    filled in by with_task_defaults); else fine-tuning's (5e-5, 3 epochs, padded, per-epoch evaluation)."""
    table = "default: the task table's, "
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--epoch_size", type=float, default=None if distill else TrainConfig.epochs,
                    help="epochs, may be fractional (" + (
                        table + _task_defaults("distill_epochs", DEFAULT_DISTILL_EPOCHS) if distill
                        else f"default {TrainConfig.epochs:g}") + ")")
    ap.add_argument("--train_batch_size", type=positive_int, default=None,
                    help="default: the task table's (32; CoLA 16)")
    ap.add_argument("--learning_rate", type=float, default=None if distill else FINETUNE_LR,
                    help="peak learning rate (" + (table + _task_defaults("distill_lr", DEFAULT_DISTILL_LR)
                                                   if distill else f"default {FINETUNE_LR:g}") + ")")
    ap.add_argument("--warmup_ratio", type=float, default=0.1)
    ap.add_argument("--weight_decay", type=float, default=0.01)
    ap.add_argument("--eval_step", "--eval_ckpt_step", dest="eval_step", type=non_negative_int,
                    default=None if distill else 0,
                    help="evaluate every N steps (0: per epoch; " + (
                        table + _task_defaults("distill_eval_steps", 0) if distill else "default 0") + ")")
    ap.add_argument("--bucket_width", type=non_negative_int, default=None if distill else 0,
                    help="train on batches of similar length, each cut to a multiple of this (0: pad every "
                         "batch to the records' length; " + (
                             table + _task_defaults("distill_bucket_width", 0) +
                             "); buckets come with --token_mean unless --no_token_mean" if distill
                             else "default 0)"))
    ap.add_argument("--bucket_graphs", default="open", choices=list(BUCKET_GRAPHS),
                    help="with --bucket_width: one training graph with the length left open (the memory of "
                         "one graph), or one static graph per length (faster steps, each graph keeps its "
                         "memory: for few lengths)")
    ap.add_argument("--max_steps", type=non_negative_int, default=0, help="stop after N steps (0: no cap)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--save_ckpt_step", type=non_negative_int, default=0,
                    help="every N steps: OUT/ckpt/step-N.ckpt and the training state (0: only at evaluations)")
    ap.add_argument("--max_ckpt_num", type=positive_int, default=5, help="keep the newest N of those checkpoints")
    ap.add_argument("--compute_type", default="fp32", choices=["fp32", "fp16"],
                    help="fp16: matrix products in float16 under a dynamic loss scale (GPU/Ascend; runs, "
                         "slowly, on CPU); quantizers, LayerNorm, softmax and losses stay fp32")
    ap.add_argument("--loss_scale_value", type=float, default=65536.0, help="fp16: initial loss scale")
    ap.add_argument("--scale_window", type=positive_int, default=1000,
                    help="fp16: steps without overflow before the loss scale doubles")
    ap.add_argument("--resume", action="store_true", help="continue the run in --output_dir")
    ap.add_argument("--stop_after", type=non_negative_int, default=0,
                    help="stop after N steps as if interrupted (to exercise --resume)")
    ap.add_argument("--overwrite", action="store_true", help="replace a run in --output_dir")
    ap.add_argument("--distribute", action="store_true",
                    help="data parallel over the ranks of a launcher (scripts/run_distribute_train_*.sh)")
    add_model_zoo_switches(ap)


def add_quant_args(ap: argparse.ArgumentParser) -> None:
    d = QuantConfig()
    g = ap.add_argument_group("quantization (defaults: 2-2-8 TWN, row-wise embedding)")
    g.add_argument("--weight_bits", type=int, default=d.weight_bits, choices=[2, 8, 32])
    g.add_argument("--embedding_bits", type=int, default=d.embedding_bits, choices=[2, 8, 32])
    g.add_argument("--act_bits", type=int, default=d.act_bits, choices=[8, 32])
    g.add_argument("--ternarizer", default=d.ternarizer, choices=["twn", "lat"])
    g.add_argument("--embedding_granularity", default=d.embedding_granularity,
                   choices=["row", "layer"])
    g.add_argument("--weight_clip", type=float, default=d.weight_clip)
    g.add_argument("--no_ste_mask", action="store_true",
                   help="pass the STE gradient also where |w| > weight_clip (model_zoo behaviour)")
    g.add_argument("--act_mode", default=d.act_mode, choices=list(ACT_MODES),
                   help="symmetric: per-batch max-abs range; asymmetric_ema: EMA of batch min/max; "
                        "learned: a trained fixed range per node (LSQ gradient)")
    g.add_argument("--act_clip", type=float, default=d.act_clip)
    g.add_argument("--act_ema_decay", type=float, default=d.act_ema_decay,
                   help="asymmetric_ema: weight of the old range per step; the range forgets its "
                        "+-act_clip start after ~1/(1 - decay) steps (0.99: ~100; the paper's 0.999: ~1000)")
    g.add_argument("--act_clip_lr_scale", type=float, default=d.act_clip_lr_scale,
                   help="learned clips train at learning_rate x this")


def add_distill_args(ap: argparse.ArgumentParser) -> None:
    d = DistillConfig()
    g = ap.add_argument_group("distillation loss weights")
    g.add_argument("--hidden_weight", type=float, default=d.hidden_weight)
    g.add_argument("--attention_weight", type=float, default=d.attention_weight)
    g.add_argument("--pred_weight", type=float, default=d.pred_weight)
    g.add_argument("--label_weight", type=float, default=d.label_weight)
    g.add_argument("--regression_target", default=d.regression_target, choices=["teacher", "label"])
    g.add_argument("--token_mean", action="store_const", const=True, default=None,
                   help="hidden/attention terms over real tokens only, independent of padding (default: "
                        "on with length buckets, off on padded batches, as the paper)")
    g.add_argument("--no_token_mean", dest="token_mean", action="store_const", const=False,
                   help="means over every position even on length buckets")
    g.add_argument("--attention_loss", default=d.attention_loss, choices=list(ATTENTION_LOSSES),
                   help="mse: MSE of the attention scores (the paper); kl: KL divergence of the student's "
                        "attention probabilities from the teacher's, per query")


def quant_config(args) -> QuantConfig:
    return QuantConfig(weight_bits=args.weight_bits, embedding_bits=args.embedding_bits,
                       act_bits=args.act_bits, ternarizer=args.ternarizer,
                       embedding_granularity=args.embedding_granularity,
                       weight_clip=args.weight_clip, ste_mask=not args.no_ste_mask,
                       act_mode=args.act_mode, act_clip=args.act_clip, act_ema_decay=args.act_ema_decay,
                       act_clip_lr_scale=args.act_clip_lr_scale)


def distill_config(args) -> DistillConfig:
    return DistillConfig(hidden_weight=args.hidden_weight, attention_weight=args.attention_weight,
                         pred_weight=args.pred_weight, label_weight=args.label_weight,
                         regression_target=args.regression_target, token_mean=args.token_mean,
                         attention_loss=args.attention_loss)


def start_run(args):
    """Device context and data-parallel init, which train.py and finetune.py share.
    Returns (rank, group_size)."""
    from .distributed import init_distributed
    from .trainer import set_context
    set_context(args.device_target, args.device_id, args.mode)
    return init_distributed(args.distribute)


def job(args):
    """The api.Job of a training entry point's flags (its identity: the flags, as run.json has it)."""
    return Job(args.data_dir, args.output_dir, args.dataset_type, args.max_seq_length, args.eval_batch_size,
               args.resume, args.overwrite, args.stop_after, identity=run_identity(args))


def with_task_defaults(args):
    """Schedule flags left out: the task table's distillation recipe, written into the flags (and so
    into run.json) so that a resume compares the numbers, not "whatever the table says today".
    --token_mean left out: on with length buckets (their padding varies per batch), off without."""
    table = task_train_config(args.task_name)
    for flag, value in (("epoch_size", table.epochs), ("eval_step", table.eval_steps),
                        ("bucket_width", table.bucket_width)):
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    if args.token_mean is None:
        args.token_mean = default_distill_config(train_config(args)).token_mean
    return args


def train_config(args) -> TrainConfig:
    """The schedule of the flags over the task table's (api.task_train_config; max_seq_length:
    the records', set by the api)."""
    given = {"learning_rate": args.learning_rate, "batch_size": args.train_batch_size, "epochs": args.epoch_size}
    return task_train_config(args.task_name, **{k: v for k, v in given.items() if v is not None},
                             warmup_ratio=args.warmup_ratio,
                             weight_decay=args.weight_decay, seed=args.seed, eval_steps=args.eval_step,
                             max_steps=args.max_steps, bucket_width=args.bucket_width,
                             bucket_graphs=args.bucket_graphs,
                             save_ckpt_steps=args.save_ckpt_step, keep_ckpt_max=args.max_ckpt_num,
                             compute_type=args.compute_type, loss_scale=args.loss_scale_value,
                             loss_scale_window=args.scale_window)


def run_identity(args, skip=("resume", "overwrite", "device_id", "eval_batch_size", "stop_after",
                            "save_ckpt_step", "max_ckpt_num")) -> dict:
    """What makes two invocations the same run (for refusing to mix runs in one folder)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in skip}


def _raised_by_project(exc: BaseException) -> bool:
    """True when the innermost frame of the traceback is this project's code (not a library's)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return True
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
    return filename.startswith(root + os.sep) and os.sep + "site-packages" + os.sep not in filename


def run_main(main, name: str) -> int:
    """Run an entry point; bad input ends with one clear error line and exit code 2, Ctrl-C with
    one line and 130 (the shell's code for SIGINT; what the run keeps, it has said already).

    Only the project's own checks become one-liners: an exception raised inside MindSpore or
    another library (a graph that fails to compile, a kernel error) keeps its full traceback."""
    try:
        main()
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, FloatingPointError) as e:
        if not _raised_by_project(e):
            raise
        logging.getLogger(name).error("%s", e)
        return 2
    except KeyboardInterrupt:
        logging.getLogger(name).error("interrupted")
        return 130
    return 0
