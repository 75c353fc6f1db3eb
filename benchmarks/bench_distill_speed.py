"""Training step throughput (samples/s) on the MiniLM-L6 shape: distillation or fine-tuning.

Teacher and student: 6 layers, hidden 384, 12 heads, FFN 1536, vocab 30522; student 2-2-8
(TWN, row-wise embedding, symmetric 8-bit activations); GRAPH_MODE; random weights and
tokens (speed does not depend on their values). Median of --steps timed steps after
--warmup untimed ones, exactly how the PyTorch original's 10.1 / 19.7 samples/s were taken.

    python benchmarks/bench_distill_speed.py --seq_lengths 128 64 --out benchmarks/results/distill_speed_cpu.json

--graphs says how the lengths are compiled: ``static`` one graph per length, ``open`` ONE graph
with the sequence length left open (what --bucket_width training does by default). One kind per
process, as a run has one: with both in one process the first kind's graphs would stay in memory
while the second is timed. --loss finetune times the fine-tuning step of the float network
(dropout 0.1) instead of the distillation step; --token_mean gives the distillation step bucket
training's loss (always with --graphs open); --append adds the record to a JSON list in --out.
    python benchmarks/bench_distill_speed.py --loss finetune --graphs open --seq_lengths 16 32 48 64 \\
        --out benchmarks/results/bucket_graphs_cpu.json --append
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import append_result, read_result_list, write_result  # noqa: E402


def build_step(quant="2-2-8", ternarizer="twn", token_mean=False):
    """The train cell of a MiniLM-L6-shaped frozen teacher + quantized student, random weights."""
    import mindspore as ms
    from src.config import BertConfig, DistillConfig, QuantConfig, TrainConfig
    from src.tinybert_model import BertForSequenceClassification, with_dropout
    from src.cell_wrapper import DistillLoss, TrainOneStep, build_optimizer
    ms.set_seed(0)
    cfg = BertConfig(num_labels=2)
    qcfg = QuantConfig.from_preset(quant, ternarizer=ternarizer)
    teacher = BertForSequenceClassification(with_dropout(cfg, 0.0), QuantConfig.full_precision())
    student = BertForSequenceClassification(with_dropout(cfg, 0.0), qcfg)
    loss = DistillLoss(student, teacher, DistillConfig(token_mean=token_mean))
    opt = build_optimizer(student, TrainConfig(), 1000)
    step = TrainOneStep(loss, opt, 1.0, student, qcfg)
    step.set_train()
    return step, cfg


def build_finetune_step():
    """The fine-tuning train cell of a MiniLM-L6-shaped float classifier (dropout 0.1)."""
    import mindspore as ms
    from src.config import BertConfig, QuantConfig, TrainConfig
    from src.tinybert_model import BertForSequenceClassification
    from src.cell_wrapper import TaskLoss, TrainOneStep, build_optimizer
    ms.set_seed(0)
    cfg = BertConfig(num_labels=2)
    net = BertForSequenceClassification(cfg, QuantConfig.full_precision())
    tcfg = TrainConfig()
    step = TrainOneStep(TaskLoss(net), build_optimizer(net, tcfg, 1000), 1.0, tcfg=tcfg)
    step.set_train()
    return step, cfg


def random_batch(rng, cfg, b, seq):
    """Token ids, a mask with lengths in [seq/2, seq], segment ids, labels (Tensors)."""
    import mindspore as ms
    ids = ms.Tensor(rng.randint(0, cfg.vocab_size, (b, seq)).astype(np.int32))
    lens = rng.randint(seq // 2, seq + 1, b)
    mask = ms.Tensor((np.arange(seq)[None, :] < lens[:, None]).astype(np.int32))
    seg = ms.Tensor(np.zeros((b, seq), np.int32))
    y = ms.Tensor(rng.randint(0, 2, b).astype(np.int32))
    return ids, mask, seg, y


def time_step(step, batch, warmup: int, steps: int) -> dict:
    """warm-up seconds (compilation included) and the timed steps of one batch shape."""
    t0 = time.time()
    for _ in range(warmup):
        step(*batch)[0].asnumpy()
    warm = time.time() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step(*batch)[0].asnumpy()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    b = batch[0].shape[0]
    return {"median_step_s": med, "samples_per_s": b / med, "warmup_s": warm,
            "step_times_s": [round(t, 4) for t in times]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--seq_lengths", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--loss", default="distill", choices=["distill", "finetune"])
    ap.add_argument("--quant", default="2-2-8")
    ap.add_argument("--ternarizer", default="twn", choices=["twn", "lat"])
    ap.add_argument("--graphs", default="static", choices=["static", "open"],
                    help="one static graph per length, or one graph with S open (set_inputs, as --bucket_width "
                         "training runs it by default)")
    ap.add_argument("--token_mean", action="store_true", help="distill: the token-mean loss of bucket training")
    ap.add_argument("--out", default="benchmarks/results/distill_speed_cpu.json")
    ap.add_argument("--append", action="store_true", help="add the record to the JSON list in --out")
    args = ap.parse_args(argv)
    if args.append:  # before minutes of measuring, not after
        try:
            read_result_list(args.out)
        except ValueError as e:
            ap.error(str(e))

    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target=args.device_target)
    from src.dataset import any_length_inputs
    if args.loss == "finetune":
        step, cfg = build_finetune_step()
    else:
        args.token_mean = args.token_mean or args.graphs == "open"
        step, cfg = build_step(args.quant, args.ternarizer, token_mean=args.token_mean)
    if args.graphs == "open":
        step.set_inputs(*any_length_inputs("sst-2", args.batch_size))  # 2 classes, like cfg
    rng = np.random.RandomState(0)
    results = []
    for seq in args.seq_lengths:
        row = {"seq_length": seq, "batch_size": args.batch_size,
               **time_step(step, random_batch(rng, cfg, args.batch_size, seq), args.warmup, args.steps)}
        print(json.dumps(row))
        results.append(row)
    (append_result if args.append else write_result)(args.out, {
        "benchmark": ("fine-tuning step, MiniLM-L6 float classifier, dropout 0.1" if args.loss == "finetune" else
                      "distillation step, MiniLM-L6 teacher + 2-2-8 student"),
        "quant": args.quant if args.loss == "distill" else "fp32",
        "ternarizer": args.ternarizer, "token_mean": args.token_mean if args.loss == "distill" else None,
        "mode": "GRAPH_MODE", "device_target": args.device_target,
        "graphs": {"static": "one static graph per length", "open": "one graph, S open"}[args.graphs],
        "warmup_steps": args.warmup, "timed_steps": args.steps,
        "load_average_1_5_15_at_end": os.getloadavg(),
        "pytorch_original_samples_per_s": {"128": 10.1, "64": 19.7}, "results": results})


if __name__ == "__main__":
    main()
