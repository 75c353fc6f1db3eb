"""Worker for test_distributed.py: a few distillation steps of a tiny model on fixed batches.

Under msrun each rank takes its half of every global batch; alone (no launcher) it takes the
whole global batch. The final student parameters are saved to OUT/params_<rank or single>.npz.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(out, distributed):
    import mindspore as ms
    from conftest import randomize, tiny_batch, tiny_config
    from src.cell_wrapper import DistillLoss, TrainOneStep, build_optimizer
    from src.config import DistillConfig, QuantConfig, TrainConfig
    from src.distributed import init_distributed
    from src.tinybert_model import BertForSequenceClassification

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    rank, group = init_distributed(distributed)
    ms.set_seed(0)
    rng = np.random.RandomState(0)  # the same on every rank: same parameters and data
    teacher = BertForSequenceClassification(tiny_config(1), QuantConfig.full_precision())
    randomize(teacher, rng, 0.3)
    # Ternary weights; activations float: per-batch activation scales would legitimately differ
    # between a half batch and the global batch.
    quant = QuantConfig(act_bits=32)
    student = BertForSequenceClassification(tiny_config(1), quant)
    t = dict(teacher.parameters_and_names())
    for n, p in student.parameters_and_names():
        if n in t:
            p.set_data(t[n].data.copy())
    opt = build_optimizer(student, TrainConfig(learning_rate=3e-3, warmup_ratio=0.0), 100)
    step = TrainOneStep(DistillLoss(student, teacher, DistillConfig()), opt, 1.0, student, quant)
    step.set_train(True)
    T = ms.Tensor
    for _ in range(4):
        ids, mask, seg = tiny_batch(rng, b=4, s=10)
        y = rng.rand(4).astype(np.float32)
        lo, hi = (rank * 4 // group, (rank + 1) * 4 // group)
        step(T(ids[lo:hi]), T(mask[lo:hi]), T(seg[lo:hi]), T(y[lo:hi]))
    name = f"params_{rank}.npz" if distributed else "params_single.npz"
    np.savez(os.path.join(out, name), **{n: p.asnumpy() for n, p in student.parameters_and_names()})


if __name__ == "__main__":
    main(sys.argv[1], "--distribute" in sys.argv)
