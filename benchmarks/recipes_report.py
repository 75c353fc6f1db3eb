"""The results of benchmarks/run_recipes.py: its JSON-lines file, the table of docs/results.md
(mean and spread over seeds) and the size-vs-metric plot (benchmarks/results/size_vs_metric.svg).

Rows are grouped into one measurement by task, flags (``recipes.row_flags_key``: the flags used,
not the recipe's name), learning rate, epochs and teacher: the seeds of one measurement.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recipes import PYTORCH_ORIGINAL, RECIPES, row_flags_key  # noqa: E402
from src.config import atomic_write_text  # noqa: E402

BEGIN, END = "<!-- recipes:begin -->", "<!-- recipes:end -->"


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
    """(task, recipe, lr, epochs, teacher, flags) -> rows (the seeds of one measurement).

    The teacher's dev metric is part of the key: a teacher fine-tuned again can come out
    different (CPU runs are not bit-identical), and students of different teachers are
    different measurements, never one mean. So are the flags (train.py's, per stage, augmented
    copies): rows of one recipe name measured under other flags are another measurement."""
    groups = {}
    for r in rows:
        if r.get("max_steps") or r.get("examples_limit"):
            continue  # smoke runs never reach the results table
        flags = row_flags_key(r)[1:4]
        key = (r["task"], r["recipe"], r["learning_rate"], r["epochs"], round(r["teacher"], 6), flags)
        groups.setdefault(key, []).append(r)
    return groups


def recipe_label(key) -> str:
    """The recipe's name, followed by the train.py flags the rows ran with when those are not the
    recipe's flags in today's registry (rows measured before the recipe changed)."""
    recipe, flags = key[1], key[5]
    if recipe in RECIPES and list(flags[0]) == list(RECIPES[recipe][0]):
        return recipe
    return f"{recipe} (ran with `{' '.join(flags[0]) or 'no flags'}`)"


def render_table(rows):
    lines = ["| task (metric) | recipe | lr, epochs | teacher | student best | final | gap (best) | "
             "PyTorch original | within 1.0 | packed MB | samples/s | wall min | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, rs in sorted(group_rows(rows).items()):
        task, recipe, lr, ep = key[:4]
        teacher = statistics.mean(r["teacher"] for r in rs)  # the key's value is rounded
        best = [r["best"] for r in rs]
        gap = 100 * (teacher - statistics.mean(best))
        ref = PYTORCH_ORIGINAL.get(task)
        ref_s = f"{100 * ref[0]:.2f} ({ref[1]})" if ref and recipe == "2-2-8" else "—"
        lines.append(f"| {task} ({rs[0]['metric']}) | {recipe_label(key)} | {lr:g}, {ep:g} | {100 * teacher:.2f} | "
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
