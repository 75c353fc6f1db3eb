"""Benchmark runner: teacher -> ternary student -> measured row, for tasks x recipes x seeds.

    python benchmarks/run_recipes.py --tasks sts-b mrpc --recipes 2-2-8 2-2-8-lat 8-8-8 \
        --glue_dir $GLUE_DIR --teachers_dir $TEACHERS_DIR
    python benchmarks/run_recipes.py --render      # docs/results.md table + size-vs-metric plot

For every task it converts the GLUE files once, takes the teacher from
``--teachers_dir/<task>`` (a Hugging Face folder, imported) or else fine-tunes one from the
backbone with the teacher recipe (TEACHER_EPOCHS and TEACHER_BATCH in benchmarks/recipes.py), and evaluates the teacher on the full
dev set. For every (recipe, seed) it distils with train.py, exports the packed file of the best
student, and appends ONE line to ``--results`` (JSON lines) once the run has finished: task,
recipe, flags, teacher and student metrics (best and final), epochs, lr, wall time, samples/s,
packed size, commit. Every step runs the project's own entry points in a subprocess (the same
commands a user types), and every step is resumable: an interrupted runner started again
skips the rows it has, resumes a half-done run with --resume, and re-uses finished teachers.

``--render`` rewrites the table between the ``recipes`` markers of docs/results.md from every row in
the results file (mean and spread over seeds) and draws benchmarks/results/size_vs_metric.svg
(model size against dev metric per task, like Figure 1 of the paper).

The recipes (name -> train.py flags) are in benchmarks/recipes.py, the table and the plot in
benchmarks/recipes_report.py; a row counts as done when a row with the same flags, seed, learning
rate and epochs is in the results (not merely the same recipe name).
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import git_commit  # noqa: E402
from recipes import (HEADLINE, RECIPES, TEACHER_BATCH, TEACHER_EPOCHS, default_recipe, plan, planned_key,  # noqa: E402
                     row_flags_key)
from recipes_report import FIGURE_RECIPES, append_row, load_rows, render  # noqa: E402
from src.config import get_task  # noqa: E402
from src.logs import setup_logging  # noqa: E402

logger = logging.getLogger("recipes")




def run(cmd, log_path):
    """Run one entry point, its output appended to log_path; a failure stops the runner."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    logger.info("$ %s", " ".join(cmd))
    env = dict(os.environ, GLOG_v=os.environ.get("GLOG_v", "3"))
    with open(log_path, "a") as log:
        code = subprocess.call([sys.executable] + cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise RuntimeError(f"{cmd[0]} failed with exit code {code}; see {log_path}")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def finished(run_dir):
    """True when train.py / finetune.py ran to its last step in run_dir."""
    path = os.path.join(run_dir, "state.json")
    if not os.path.isfile(path):
        return False
    state = read_json(path)
    return "total_steps" in state and state["step"] >= state["total_steps"]


def train_cmd(entry, run_dir, extra):
    """The command that starts, resumes or (when done) skips a training run."""
    if finished(run_dir):
        return None
    resume = ["--resume"] if os.path.isfile(os.path.join(run_dir, "state.json")) else []
    return [entry, "--output_dir", run_dir] + extra + resume


def records(args, task, copies=0):
    """The task's converted records (with ``copies`` augmented copies per training example)."""
    tdir = os.path.join(args.work_dir, task)
    max_len = args.max_seq_length or get_task(task).max_seq_length
    data = os.path.join(tdir, f"data-{max_len}" + (f"-aug{copies}" if copies else ""))
    if not os.path.isfile(os.path.join(data, "meta.json")):
        run(["scripts/convert_glue.py", "--task_name", task, "--data_dir", args.glue_dir, "--vocab_file",
             os.path.join(tdir, "backbone", "vocab.txt"), "--output_dir", data, "--max_seq_length", str(max_len)]
            + (["--limit", str(args.limit)] if args.limit else [])
            + (["--augment_copies", str(copies)] if copies else [])
            + (["--hf_dir", args.backbone] if copies and args.backbone else []),
            os.path.join(tdir, "runner.log"))
    return data


def prepare_task(args, task):
    """Records and an evaluated teacher for one task -> (records dir, teacher ckpt, teacher metrics)."""
    tdir = os.path.join(args.work_dir, task)
    log = os.path.join(tdir, "runner.log")
    max_len = args.max_seq_length or get_task(task).max_seq_length
    backbone = os.path.join(tdir, "backbone", "backbone.ckpt")
    if not os.path.isfile(backbone):
        run(["scripts/import_hf.py", "--task_name", task, "--output", backbone]
            + (["--hf_dir", args.backbone] if args.backbone else []), log)
    data = records(args, task)
    hf = os.path.join(args.teachers_dir, task) if args.teachers_dir else None
    if hf and os.path.isfile(os.path.join(hf, "config.json")):
        teacher, source = os.path.join(tdir, "teacher", "teacher.ckpt"), f"imported {hf}"
        if not os.path.isfile(teacher):
            run(["scripts/import_hf.py", "--hf_dir", hf, "--task_name", task, "--output", teacher], log)
    else:
        ft = os.path.join(tdir, "teacher-ft")
        epochs = args.teacher_epochs or TEACHER_EPOCHS.get(task, 5)
        source = f"fine-tuned here: {epochs} epochs, lr 5e-5, batch {TEACHER_BATCH}, length {max_len}"
        if args.teacher_bucket_width:
            source += f", length buckets of {args.teacher_bucket_width}"
        cmd = train_cmd("finetune.py", ft, ["--task_name", task, "--model", backbone, "--data_dir", data,
                                            "--learning_rate", "5e-5", "--epoch_size", str(epochs),
                                            "--train_batch_size", str(TEACHER_BATCH)]
                        + (["--bucket_width", str(args.teacher_bucket_width)] if args.teacher_bucket_width else [])
                        + (["--max_steps", str(args.max_steps)] if args.max_steps else []))
        if cmd:
            run(cmd, log)
        teacher = os.path.join(ft, "best.ckpt")
    metrics = teacher[:-len(".ckpt")] + ".eval.json"
    if not os.path.isfile(metrics):
        run(["eval.py", "--checkpoint", teacher, "--data_dir", data, "--output_file", metrics], log)
    return data, teacher, dict(read_json(metrics), source=source)


def task_lr(args, task):
    """--learning_rate, or the task table's distillation learning rate (what train.py would use)."""
    return args.learning_rate if args.learning_rate is not None else get_task(task).distill_lr


def task_epochs(args, task):
    """--epoch_size, or the task table's distillation epochs (what train.py would use)."""
    return args.epoch_size if args.epoch_size is not None else get_task(task).distill_epochs


def task_eval_step(args, task):
    """--eval_step, or the task table's evaluation interval (what train.py would use)."""
    return args.eval_step if args.eval_step is not None else get_task(task).distill_eval_steps


def distil(args, task, recipe, seed, data, teacher, teacher_metrics):
    """One distillation run, its packed export, and its results row."""
    lr, epochs, eval_step = task_lr(args, task), task_epochs(args, task), task_eval_step(args, task)
    p = plan(recipe)
    if p["augment_copies"]:
        data = records(args, task, p["augment_copies"])
    flags = p["train_flags"]
    # a recipe without buckets runs padded whatever the task table's default batching (a name
    # means the same flags on every task); not part of the row's flags, which predate the pin
    padded = [] if "--bucket_width" in flags else ["--bucket_width", "0"]
    stages = p["stage_flags"] or [[]]
    top = os.path.join(args.work_dir, task, f"{recipe}-lr{lr:g}-e{epochs:g}-s{seed}")
    log = os.path.join(args.work_dir, task, "runner.log")
    t0 = time.time()
    init = []
    for k, stage_flags in enumerate(stages, 1):
        run_dir = top if len(stages) == 1 else os.path.join(top, f"stage{k}")
        cmd = train_cmd("train.py", run_dir, ["--task_name", task, "--teacher_model", teacher, "--data_dir", data,
                                              "--learning_rate", str(lr), "--epoch_size",
                                              f"{epochs / len(stages):g}", "--seed", str(seed)]
                        + flags + padded + stage_flags + init + ["--eval_step", str(eval_step)]
                        + (["--max_steps", str(args.max_steps)] if args.max_steps else []))
        if cmd:
            run(cmd, log)
        init = ["--student_model", os.path.join(run_dir, "last.ckpt")]
    packed = os.path.join(run_dir, "export", "best")
    if not os.path.isfile(packed + ".size.json"):
        run(["export.py", "--checkpoint", os.path.join(run_dir, "best.ckpt"), "--output", packed,
             "--file_format", "NONE", "--packed"], log)
    hist = read_json(os.path.join(run_dir, "metrics.json"))
    best = max(hist, key=lambda r: r["select"])
    head = HEADLINE.get(task, "select")
    size = read_json(packed + ".size.json")
    speeds = [r["samples_per_s"] for r in hist if r.get("samples_per_s")]
    return {"task": task, "recipe": recipe, "seed": seed, "learning_rate": lr,
            "epochs": epochs, "metric": head, "teacher": teacher_metrics[head],
            "teacher_source": teacher_metrics["source"], "best": best[head], "best_step": best["step"],
            "final": hist[-1][head], "best_metrics": best, "evaluations": len(hist),
            "eval_step": eval_step or None,
            "fp32_MB": size["fp32_MB"], "packed_MB": size["packed_MB"],
            "samples_per_s": statistics.median(speeds) if speeds else None,
            "runner_wall_s": round(time.time() - t0, 1), "train_flags": flags,
            "stage_flags": stages if len(stages) > 1 else None,
            "augment": read_json(os.path.join(data, "meta.json")).get("augment"),
            "max_steps": args.max_steps or None, "examples_limit": args.limit or None,
            "commit": git_commit(), "machine": f"{os.cpu_count()} cores, {args.device_note}"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["sts-b", "mrpc"])
    ap.add_argument("--recipes", nargs="+", default=["default"], choices=sorted(RECIPES) + ["default"],
                    help="default: each task's default recipe (2-2-8, or 2-2-8-buckets where the task "
                         "table's batching is length buckets: STS-B, CoLA)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[42])
    ap.add_argument("--learning_rate", type=float, default=None,
                    help="default: train.py's per task (the task table's distill_lr)")
    ap.add_argument("--epoch_size", type=float, default=None,
                    help="default: train.py's per task (the task table's distill_epochs)")
    ap.add_argument("--eval_step", type=int, default=None,
                    help="evaluate every N steps, 0: once per epoch (default: train.py's per task, the task "
                         "table's distill_eval_steps)")
    ap.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR"), help="GLUE folder (default: $GLUE_DIR)")
    ap.add_argument("--teachers_dir", default=os.environ.get("TEACHERS_DIR"),
                    help="folder of Hugging Face teachers by task name (default: $TEACHERS_DIR); a task "
                         "without one is fine-tuned")
    ap.add_argument("--backbone", default=None, help="Hugging Face folder (default: the MiniLM package)")
    ap.add_argument("--teacher_epochs", type=float, default=None)
    ap.add_argument("--teacher_bucket_width", type=int, default=0,
                    help="fine-tune the teacher on length-grouped batches (its loss reads [CLS] only, so "
                         "the cut padding changes nothing but speed); recorded in the teacher source")
    ap.add_argument("--max_seq_length", type=int, default=None, help="default: the task table's (128; SST-2 and CoLA 64)")
    ap.add_argument("--work_dir", default=os.path.join(ROOT, "runs", "bench"))
    ap.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results", "recipes.jsonl"))
    ap.add_argument("--limit", type=int, default=0, help="smoke test: first N examples per split")
    ap.add_argument("--max_steps", type=int, default=0, help="smoke test: cap every training run")
    ap.add_argument("--device_note", default="CPU, GRAPH_MODE")
    ap.add_argument("--render", action="store_true", help="only rewrite the results table and the plot")
    ap.add_argument("--readme", default=os.path.join(ROOT, "docs", "results.md"), help="the page holding the table")
    ap.add_argument("--svg", default=os.path.join(ROOT, "benchmarks", "results", "size_vs_metric.svg"))
    args = ap.parse_args(argv)
    if args.eval_step is not None and args.eval_step < 0:
        ap.error(f"--eval_step must be >= 0 (0 = once per epoch), got {args.eval_step}")
    if args.teacher_bucket_width < 0:
        ap.error(f"--teacher_bucket_width must be >= 0 (0 = padded batches), got {args.teacher_bucket_width}")
    setup_logging(sys.stderr)
    if args.render:
        table, svg = render(args.results, args.readme, args.svg)
        print(table)
        logger.info("wrote %s and %s", args.readme,
                    svg or f"no plot (no row of the plotted recipes {', '.join(FIGURE_RECIPES)})")
        return 0
    for task in args.tasks:
        get_task(task)  # an unknown name fails here, before any hour-long step starts
    if not args.glue_dir:
        ap.error("--glue_dir (or GLUE_DIR) is required: a GLUE folder in the standard layout")
    # rows are matched by the flags they ran with: a recipe whose flags changed is measured again
    done = {row_flags_key(r) for r in load_rows(args.results)}
    for task in args.tasks:
        recipes = [default_recipe(task) if rec == "default" else rec for rec in args.recipes]
        todo = [(rec, s) for rec in recipes for s in args.seeds
                if planned_key(task, rec, s, task_lr(args, task), task_epochs(args, task)) not in done]
        if not todo:
            logger.info("%s: every requested row is in %s", task, args.results)
            continue
        data, teacher, t_metrics = prepare_task(args, task)
        for recipe, seed in todo:
            row = distil(args, task, recipe, seed, data, teacher, t_metrics)
            append_row(args.results, row)
            logger.info("%s %s seed %d: teacher %.4f student best %.4f final %.4f (%s)", task, recipe, seed,
                        row["teacher"], row["best"], row["final"], row["metric"])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        logger.error("%s", e)
        sys.exit(2)
