"""Benchmark runner: teacher -> ternary student -> measured row, for tasks x recipes x seeds.

    python benchmarks/run_recipes.py --tasks sts-b mrpc --recipes 2-2-8 2-2-8-lat 8-8-8 \
        --glue_dir $GLUE_DIR --teachers_dir $TEACHERS_DIR
    python benchmarks/run_recipes.py --render      # docs/results.md table + size-vs-metric plot

For every task it converts the GLUE files once, takes the teacher from
``--teachers_dir/<task>`` (a Hugging Face folder, imported) or else fine-tunes one from the
backbone with the teacher recipe (TEACHER_EPOCHS and TEACHER_BATCH below), and evaluates the teacher on the full
dev set. For every (recipe, seed) it distils with train.py, exports the packed file of the best
student, and appends ONE line to ``--results`` (JSON lines) once the run has finished: task,
recipe, flags, teacher and student metrics (best and final), epochs, lr, wall time, samples/s,
packed size, commit. Every step runs the project's own entry points in a subprocess (the same
commands a user types), and every step is resumable: an interrupted runner started again
skips the rows it has, resumes a half-done run with --resume, and re-uses finished teachers.

``--render`` rewrites the table between the ``recipes`` markers of docs/results.md from every row in
the results file (mean and spread over seeds) and draws benchmarks/results/size_vs_metric.svg
(model size against dev metric per task, like Figure 1 of the paper).
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
from src.config import atomic_write_text, get_task  # noqa: E402
from src.logs import setup_logging  # noqa: E402

logger = logging.getLogger("recipes")

# name -> (train.py flags, what it is). "2-2-8" is the product's default recipe.
RECIPES = {
    "2-2-8": ([], "2-2-8 TWN, row-wise embedding, symmetric 8-bit activations (default)"),
    "2-2-8-lat": (["--ternarizer", "lat"], "2-2-8 with loss-aware ternarization"),
    "2-2-8-layer-emb": (["--embedding_granularity", "layer"], "2-2-8, one scale for the whole word embedding"),
    # the paper's decay 0.999: the ranges forget their +-act_clip start after ~1000 steps
    "2-2-8-ema": (["--act_mode", "asymmetric_ema", "--act_ema_decay", "0.999"],
                  "2-2-8, asymmetric EMA activation ranges, decay 0.999"),
    # decay 0.99 (the default of --act_ema_decay): within ~100 steps
    "2-2-8-ema-fast": (["--act_mode", "asymmetric_ema", "--act_ema_decay", "0.99"],
                       "2-2-8, asymmetric EMA activation ranges with decay 0.99"),
    "2-2-8-no-ste-mask": (["--no_ste_mask"], "2-2-8, STE passes gradients outside the clip"),
    "2-2-8-learned": (["--act_mode", "learned"], "2-2-8, learned activation clips (fixed ranges, LSQ gradient)"),
    "2-2-8-no-attn": (["--attention_weight", "0"], "ablation: no attention-score term"),
    "2-2-8-no-kd": (["--hidden_weight", "0", "--attention_weight", "0", "--pred_weight", "0",
                     "--label_weight", "1"], "ablation: no distillation, gold labels only"),
    "8-8-8": (["--weight_bits", "8", "--embedding_bits", "8"], "8-bit weights, embedding and activations"),
    "2-2-8-tokens": (["--token_mean"], "2-2-8, hidden/attention MSE over real tokens only"),
    "2-2-8-buckets": (["--token_mean", "--bucket_width", "16"],
                      "2-2-8-tokens on length-grouped batches cut to a multiple of 16 (faster)"),
    "2-2-8-gold": (["--label_weight", "1"], "2-2-8 plus cross-entropy / MSE on the gold labels"),
    "2-2-8-two-stage": ([], "2-2-8, hidden + attention terms first, then the prediction term"),
    "2-2-8-buckets-two-stage": (["--token_mean", "--bucket_width", "16"], "2-2-8-two-stage on length buckets"),
}
# The ablations and variants again on length buckets ("2-2-8-buckets-no-kd", ...): same flags plus
# the bucket ones, so they compare with "2-2-8-buckets" at about half the CPU time of padded runs.
RECIPES.update({"2-2-8-buckets" + name[len("2-2-8"):]: (RECIPES["2-2-8-buckets"][0] + flags, desc + ", on length buckets")
                for name, (flags, desc) in list(RECIPES.items())
                if name in ("2-2-8-lat", "2-2-8-layer-emb", "2-2-8-no-attn", "2-2-8-no-kd", "2-2-8-gold",
                            "2-2-8-learned", "2-2-8-ema", "2-2-8-ema-fast", "2-2-8-no-ste-mask")})
RECIPES["8-8-8-buckets"] = (RECIPES["2-2-8-buckets"][0] + RECIPES["8-8-8"][0], "8-8-8 on length buckets")
RECIPES["2-2-8-buckets-aug"] = (RECIPES["2-2-8-buckets"][0],
                                "2-2-8-buckets on the training set plus altered copies (src/augment.py)")

# Recipes that distil on augmented records: altered copies per training example
# (scripts/convert_glue.py --augment_copies N, other augmentation settings at their defaults).
AUGMENT = {"2-2-8-buckets-aug": 4}

# Recipes run as several train.py runs (TinyBERT's two-stage distillation): extra flags per
# stage; each stage gets an equal share of --epoch_size (the same compute as one run) and
# starts its student from the previous stage's last checkpoint. The row reports the last stage.
_INTERMEDIATE, _PREDICTION = ["--pred_weight", "0"], ["--hidden_weight", "0", "--attention_weight", "0"]
STAGES = {"2-2-8-two-stage": [_INTERMEDIATE, _PREDICTION],
          "2-2-8-buckets-two-stage": [_INTERMEDIATE, _PREDICTION]}

# Headline metric of each task (the one the paper and issue tables report).
HEADLINE = {"sts-b": "pearson", "mrpc": "f1", "sst-2": "acc", "rte": "acc", "cola": "mcc", "qnli": "acc",
            "wnli": "acc", "qqp": "f1", "mnli": "acc", "mnli-mm": "acc"}

# What the PyTorch original TernaryBERT reaches from the same teachers (2-2-8, best dev value of
# its periodic evaluations, learning rates swept; as reported beside the teachers used here): best of the sweep.
PYTORCH_ORIGINAL = {"sts-b": (0.8308, "lr 1e-4"), "mrpc": (0.8257, "lr 2e-5"), "sst-2": (0.8830, "1 epoch"),
                    "rte": (0.5668, "lr 5e-5"), "cola": (0.2106, "lr 5e-5")}

# Teacher fine-tuning recipe (the one the reference teachers were trained with): AdamW 5e-5, batch 32 on every task,
# 5 epochs (SST-2 3). Lengths come from the task table (src/config.py: 128; SST-2 and CoLA 64,
# which truncates none of CoLA: its longest sentence is 47 tokens with [CLS]/[SEP]).
# Distillation uses the task table's batch (CoLA 16, as the original).
TEACHER_EPOCHS = {"sst-2": 3}
TEACHER_BATCH = 32

BEGIN, END = "<!-- recipes:begin -->", "<!-- recipes:end -->"


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


def load_rows(path):
    rows = []
    if os.path.isfile(path):
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{n}: not a JSON line ({e})") from None
    return rows


def append_row(path, row):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def row_key(task, recipe, seed, lr, epochs):
    return (task, recipe, int(seed), float(lr), float(epochs))


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


def distil(args, task, recipe, seed, data, teacher, teacher_metrics):
    """One distillation run, its packed export, and its results row."""
    lr = task_lr(args, task)
    if recipe in AUGMENT:
        data = records(args, task, AUGMENT[recipe])
    flags, _ = RECIPES[recipe]
    stages = STAGES.get(recipe, [[]])
    top = os.path.join(args.work_dir, task, f"{recipe}-lr{lr:g}-e{args.epoch_size:g}-s{seed}")
    log = os.path.join(args.work_dir, task, "runner.log")
    t0 = time.time()
    init = []
    for k, stage_flags in enumerate(stages, 1):
        run_dir = top if len(stages) == 1 else os.path.join(top, f"stage{k}")
        cmd = train_cmd("train.py", run_dir, ["--task_name", task, "--teacher_model", teacher, "--data_dir", data,
                                              "--learning_rate", str(lr), "--epoch_size",
                                              f"{args.epoch_size / len(stages):g}", "--seed", str(seed)]
                        + flags + stage_flags + init
                        + (["--eval_step", str(args.eval_step)] if args.eval_step else [])
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
            "epochs": args.epoch_size, "metric": head, "teacher": teacher_metrics[head],
            "teacher_source": teacher_metrics["source"], "best": best[head], "best_step": best["step"],
            "final": hist[-1][head], "best_metrics": best, "evaluations": len(hist),
            "eval_step": args.eval_step or None,
            "fp32_MB": size["fp32_MB"], "packed_MB": size["packed_MB"],
            "samples_per_s": statistics.median(speeds) if speeds else None,
            "runner_wall_s": round(time.time() - t0, 1), "train_flags": flags,
            "stage_flags": stages if len(stages) > 1 else None,
            "augment": read_json(os.path.join(data, "meta.json")).get("augment"),
            "max_steps": args.max_steps or None, "examples_limit": args.limit or None,
            "commit": git_commit(), "machine": f"{os.cpu_count()} cores, {args.device_note}"}


# ---------------------------------------------------------------- rendering

def _fmt(values):
    """'84.99' for one value, '84.12 ± 0.40 (3)' (mean ± sample std, n) for several; in points."""
    pts = [100 * v for v in values]
    if len(pts) == 1:
        return f"{pts[0]:.2f}"
    return f"{statistics.mean(pts):.2f} ± {statistics.stdev(pts):.2f} ({len(pts)})"


def _mean_of(rows, key, scale):
    vals = [r[key] * scale for r in rows if r.get(key) is not None]
    return f"{statistics.mean(vals):.1f}" if vals else "—"


def group_rows(rows):
    """(task, recipe, lr, epochs, teacher) -> rows (the seeds of one measurement).

    The teacher's dev metric is part of the key: a teacher fine-tuned again can come out
    different (CPU runs are not bit-identical), and students of different teachers are
    different measurements, never one mean."""
    groups = {}
    for r in rows:
        if r.get("max_steps") or r.get("examples_limit"):
            continue  # smoke runs never reach the results table
        key = (r["task"], r["recipe"], r["learning_rate"], r["epochs"], round(r["teacher"], 6))
        groups.setdefault(key, []).append(r)
    return groups


def render_table(rows):
    lines = ["| task (metric) | recipe | lr, epochs | teacher | student best | final | gap (best) | "
             "PyTorch original | within 1.0 | packed MB | samples/s | wall min | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (task, recipe, lr, ep, _), rs in sorted(group_rows(rows).items()):
        teacher = statistics.mean(r["teacher"] for r in rs)  # the key's value is rounded
        best = [r["best"] for r in rs]
        gap = 100 * (teacher - statistics.mean(best))
        ref = PYTORCH_ORIGINAL.get(task)
        ref_s = f"{100 * ref[0]:.2f} ({ref[1]})" if ref and recipe == "2-2-8" else "—"
        lines.append(f"| {task} ({rs[0]['metric']}) | {recipe} | {lr:g}, {ep:g} | {100 * teacher:.2f} | "
                     f"{_fmt(best)} | {_fmt([r['final'] for r in rs])} | {gap:+.2f} | {ref_s} | "
                     f"{'yes' if gap <= 1.0 else '**no**'} | {statistics.mean(r['packed_MB'] for r in rs):.2f} | "
                     f"{_mean_of(rs, 'samples_per_s', 1)} | {_mean_of(rs, 'runner_wall_s', 1 / 60)} | "
                     f"{', '.join(str(r['seed']) for r in rs)} |")
    return "\n".join(lines)


# The plot is the paper's Figure 1 (size against metric: full precision, 8-8-8, 2-2-8 TWN and
# LAT); ablations and loss variants keep the 2-2-8 size and would only pile labels on one x.
FIGURE_RECIPES = ("2-2-8", "2-2-8-buckets", "2-2-8-lat", "2-2-8-buckets-lat", "8-8-8", "8-8-8-buckets")


def render_svg(rows, path):
    """Small multiples, one panel per task: x = model size (MB, log scale), y = dev metric."""
    import math
    groups = {k: rs for k, rs in group_rows(rows).items() if k[1] in FIGURE_RECIPES}
    tasks = sorted({k[0] for k in groups})
    if not tasks:
        return None
    w, h, pad = 330, 250, 45
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(tasks)}" height="{h}" '
             f'font-family="sans-serif" font-size="10">']
    for i, task in enumerate(tasks):
        keys = sorted(k for k in groups if k[0] == task)
        fp32_mb = groups[keys[0]][0]["fp32_MB"]
        teachers = sorted({k[4] for k in keys})
        pts = [("fp32 teacher", fp32_mb, t) for t in teachers]
        # a recipe run at several learning rates / epoch counts gets them in its label, and
        # with several teachers in one panel every student names its own
        several = {k[1] for k in keys if len({j[2:4] for j in keys if j[1] == k[1]}) > 1}
        pts += [(k[1] + (f", lr {k[2]:g}, {k[3]:g} ep" if k[1] in several else "")
                 + (f", teacher {100 * k[4]:.2f}" if len(teachers) > 1 else ""),
                 statistics.mean(r["packed_MB"] for r in groups[k]), statistics.mean(r["best"] for r in groups[k]))
                for k in keys]
        xs = [math.log10(p[1]) for p in pts]
        ys = [p[2] for p in pts]
        x0, x1 = min(xs) - 0.1, max(xs) + 0.1
        y0, y1 = min(ys) - 0.01, max(ys) + 0.01
        ox = i * w

        def sx(v):
            return ox + pad + (v - x0) / (x1 - x0) * (w - 2 * pad)

        def sy(v):
            return h - pad + (y0 - v) / (y1 - y0) * (h - 2 * pad)

        metric = next(rs[0]["metric"] for k, rs in groups.items() if k[0] == task)
        parts.append(f'<text x="{ox + w / 2}" y="14" text-anchor="middle" font-size="12">{task} ({metric})</text>')
        parts.append(f'<rect x="{ox + pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" '
                     f'fill="none" stroke="#999"/>')
        parts.append(f'<text x="{ox + w / 2}" y="{h - 8}" text-anchor="middle">model size, MB (log)</text>')
        for v in (y0 + 0.01, y1 - 0.01):
            parts.append(f'<text x="{ox + pad - 4}" y="{sy(v) + 3:.1f}" text-anchor="end">{100 * v:.1f}</text>')
        for name, mb, val in pts:
            color = "#c00" if name == "fp32 teacher" else "#036"
            parts.append(f'<circle cx="{sx(math.log10(mb)):.1f}" cy="{sy(val):.1f}" r="3.5" fill="{color}"/>')
            x = sx(math.log10(mb))
            # labels of right-hand points run leftwards, so they stay inside their panel
            right = x > ox + w / 2
            anchor = ' text-anchor="end"' if right else ""
            parts.append(f'<text x="{x - 5 if right else x + 5:.1f}" y="{sy(val) - 5:.1f}"{anchor}>{name} '
                         f'({mb:.1f} MB, {100 * val:.2f})</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    return path


def render(results, readme, svg):
    if not os.path.isfile(results):
        raise FileNotFoundError(f"{results} does not exist: no finished run to render")
    rows = load_rows(results)
    table = render_table(rows)
    with open(readme) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} markers to put the table between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(readme, head + BEGIN + "\n" + table + "\n" + END + tail)
    return table, render_svg(rows, svg)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["sts-b", "mrpc"])
    ap.add_argument("--recipes", nargs="+", default=["2-2-8"], choices=sorted(RECIPES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[42])
    ap.add_argument("--learning_rate", type=float, default=None,
                    help="default: train.py's per task (the task table's distill_lr)")
    ap.add_argument("--epoch_size", type=float, default=3)
    ap.add_argument("--eval_step", type=int, default=0,
                    help="evaluate every N steps (default 0: once per epoch); for 1-epoch runs like SST-2")
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
    done = {row_key(r["task"], r["recipe"], r["seed"], r["learning_rate"], r["epochs"])
            for r in load_rows(args.results)}
    for task in args.tasks:
        todo = [(rec, s) for rec in args.recipes for s in args.seeds
                if row_key(task, rec, s, task_lr(args, task), args.epoch_size) not in done]
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
