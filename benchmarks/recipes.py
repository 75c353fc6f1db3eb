"""The recipe registry of benchmarks/run_recipes.py: what each named recipe passes to train.py.

A recipe is a name for a set of train.py flags (plus, for a few, augmented records or several
training stages). Results are keyed by the flags actually used (``flags_key``), so a recipe whose
flags change never averages with rows measured under its old flags.
"""

# Variants of the default recipe: suffix -> (train.py flags, what it is). Each exists padded
# ("2-2-8-<suffix>") and, where listed in BUCKETED, on length buckets ("2-2-8-buckets-<suffix>").
_VARIANTS = {
    "lat": (["--ternarizer", "lat"], "2-2-8 with loss-aware ternarization"),
    "layer-emb": (["--embedding_granularity", "layer"], "2-2-8, one scale for the whole word embedding"),
    # the paper's decay 0.999: the ranges forget their +-act_clip start after ~1000 steps
    "ema": (["--act_mode", "asymmetric_ema", "--act_ema_decay", "0.999"],
            "2-2-8, asymmetric EMA activation ranges, decay 0.999"),
    # decay 0.99 (the default of --act_ema_decay): within ~100 steps
    "ema-fast": (["--act_mode", "asymmetric_ema", "--act_ema_decay", "0.99"],
                 "2-2-8, asymmetric EMA activation ranges with decay 0.99"),
    "no-ste-mask": (["--no_ste_mask"], "2-2-8, STE passes gradients outside the clip"),
    "learned": (["--act_mode", "learned"], "2-2-8, learned activation clips (fixed ranges, LSQ gradient)"),
    "no-attn": (["--attention_weight", "0"], "ablation: no attention-score term"),
    "no-kd": (["--hidden_weight", "0", "--attention_weight", "0", "--pred_weight", "0", "--label_weight", "1"],
              "ablation: no distillation, gold labels only"),
    "tokens": (["--token_mean"], "2-2-8, hidden/attention MSE over real tokens only"),
    "gold": (["--label_weight", "1"], "2-2-8 plus cross-entropy / MSE on the gold labels"),
    "attn-kl": (["--attention_loss", "kl"], "2-2-8, attention term: KL of the attention probabilities"),
    "two-stage": ([], "2-2-8, hidden + attention terms first, then the prediction term"),
}
# The bucket flags: length-grouped batches cut to a multiple of 16, and the token-mean loss that
# makes the hidden/attention terms independent of the cut padding.
BUCKETS = ["--token_mean", "--bucket_width", "16"]
# variants that also exist on length buckets, where they compare with "2-2-8-buckets" at about
# half the CPU time of padded runs
_BUCKETED = ("lat", "layer-emb", "no-attn", "no-kd", "gold", "learned", "ema", "ema-fast", "no-ste-mask",
             "two-stage", "attn-kl")

# name -> (train.py flags, what it is). The product's default recipe is "2-2-8" on padded batches
# or "2-2-8-buckets", by the task table's batching (default_recipe); the runner pins a recipe
# without bucket flags to padded batches, so each name means the same flags on every task.
RECIPES = {"2-2-8": ([], "2-2-8 TWN, row-wise embedding, symmetric 8-bit activations, padded batches"),
           "2-2-8-buckets": (BUCKETS, "2-2-8-tokens on length-grouped batches cut to a multiple of 16 (faster)"),
           "8-8-8": (["--weight_bits", "8", "--embedding_bits", "8"], "8-bit weights, embedding and activations")}
RECIPES.update({f"2-2-8-{s}": v for s, v in _VARIANTS.items()})
RECIPES.update({f"2-2-8-buckets-{s}": (BUCKETS + _VARIANTS[s][0], _VARIANTS[s][1] + ", on length buckets")
                for s in _BUCKETED})
RECIPES["8-8-8-buckets"] = (BUCKETS + RECIPES["8-8-8"][0], "8-8-8 on length buckets")
RECIPES["2-2-8-buckets-aug"] = (BUCKETS, "2-2-8-buckets on the training set plus altered copies (src/augment.py)")

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


def default_recipe(task: str) -> str:
    """The recipe that train.py runs for a task without schedule flags: the task table's batching."""
    from src.config import get_task
    width = get_task(task).distill_bucket_width
    if width and width != int(BUCKETS[-1]):
        raise ValueError(f"{task}'s default bucket width {width} has no recipe (2-2-8-buckets is {BUCKETS[-1]})")
    return "2-2-8-buckets" if width else "2-2-8"


def plan(recipe: str) -> dict:
    """What a recipe runs: train.py flags, per-stage flags (None: one stage), augmented copies."""
    flags, _ = RECIPES[recipe]
    return {"train_flags": list(flags), "stage_flags": STAGES.get(recipe), "augment_copies": AUGMENT.get(recipe, 0)}


def flags_key(task: str, train_flags, stage_flags, augment_copies: int, seed: int, lr: float, epochs: float):
    """The identity of a measurement: the flags used, not the recipe's name."""
    stages = tuple(tuple(s) for s in stage_flags) if stage_flags else ()
    return (task, tuple(train_flags), stages, int(augment_copies or 0), int(seed), float(lr), float(epochs))


def planned_key(task: str, recipe: str, seed: int, lr: float, epochs: float):
    """flags_key of a run that ``recipe`` would make."""
    p = plan(recipe)
    return flags_key(task, p["train_flags"], p["stage_flags"], p["augment_copies"], seed, lr, epochs)


def row_flags_key(row: dict):
    """flags_key of a results row (rows name their augmentation by its settings, copies among them)."""
    aug = row.get("augment")
    return flags_key(row["task"], row["train_flags"], row.get("stage_flags"),
                     aug.get("copies", 0) if isinstance(aug, dict) else 0, row["seed"], row["learning_rate"],
                     row["epochs"])
