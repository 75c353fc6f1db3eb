"""Same-machine reference: the TernaryBERT distillation step written in PyTorch.

The speed target of the core issue is "the PyTorch original's step on these machines". The
machines' speed drifts (up to 2x between days), so a fair comparison runs both steps in the
same sitting. This script is this project's own PyTorch rendering of the step the original
takes (same algorithm, not its code): MiniLM-L6-shaped frozen teacher (forward in no_grad)
and 2-2-8 student (TWN layer-wise Transformer weights, row-wise word embedding, STE masked
outside |w| <= 2.5, symmetric per-batch 8-bit activations at the inputs of quantized dense
layers, on Q and K, and on the softmax probabilities and V), hidden + attention-score +
soft-CE losses, AdamW, global-norm clip 1.0. Random weights and tokens, batch 32. One
simplification, in PyTorch's favour: the activation STE passes every gradient (the original
zeroes it outside the clip, one more compare and multiply per quantized activation).

PyTorch is NOT a project dependency; run this from a separate venv:

    python -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install "numpy<2" torch==2.13.0
    /tmp/tvenv/bin/python benchmarks/bench_torch_reference.py --out benchmarks/results/distill_speed_torch_cpu.json

It measures like bench_distill_speed.py: median of --steps timed steps after --warmup.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_result  # noqa: E402

H, HEADS, FFN, LAYERS, VOCAB, MAX_POS = 384, 12, 1536, 6, 30522, 512
CLIP = 2.5


def build(torch, quantize):
    nn, F = torch.nn, torch.nn.functional

    class Ternary(torch.autograd.Function):
        """TWN forward; gradient passed to the latent weight inside |w| <= CLIP."""

        @staticmethod
        def forward(ctx, w, rowwise):
            ctx.save_for_backward(w)
            wc = w.clamp(-CLIP, CLIP)
            a = wc.abs()
            dims = (1,) if rowwise else tuple(range(w.dim()))
            delta = 0.7 * a.mean(dim=dims, keepdim=True)
            b = (a > delta).to(w.dtype)
            alpha = (a * b).sum(dim=dims, keepdim=True) / b.sum(dim=dims, keepdim=True).clamp_min(1.0)
            return alpha * b * wc.sign()

        @staticmethod
        def backward(ctx, g):
            (w,) = ctx.saved_tensors
            return g * (w.abs() <= CLIP).to(g.dtype), None

    class ActQ(torch.autograd.Function):
        """Symmetric per-tensor 8-bit fake quant, unmasked STE (see the module docstring)."""

        @staticmethod
        def forward(ctx, x):
            s = 127.0 / x.detach().abs().max().clamp(max=CLIP).clamp_min(1e-8)
            return torch.round(x.clamp(-CLIP, CLIP) * s) / s

        @staticmethod
        def backward(ctx, g):
            return g

    aq = ActQ.apply if quantize else (lambda x: x)

    class QLinear(nn.Linear):
        def forward(self, x):
            w = Ternary.apply(self.weight, False) if quantize else self.weight
            return F.linear(aq(x), w, self.bias)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (QLinear(H, H) for _ in range(4))
            self.f1, self.f2 = QLinear(H, FFN), QLinear(FFN, H)
            self.ln1, self.ln2 = nn.LayerNorm(H, eps=1e-12), nn.LayerNorm(H, eps=1e-12)

        def forward(self, x, add_mask):
            b, s, _ = x.shape
            split = lambda t: t.view(b, s, HEADS, H // HEADS).transpose(1, 2)  # noqa: E731
            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))     # [B, nh, S, dh]
            scores = aq(q) @ aq(k).transpose(-1, -2) / (H // HEADS) ** 0.5 + add_mask
            ctx = aq(F.softmax(scores, -1)) @ aq(v)                          # [B, nh, S, dh]
            a = self.ln1(self.o(ctx.transpose(1, 2).reshape(b, s, H)) + x)
            return self.ln2(self.f2(F.gelu(self.f1(a))) + a), scores

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.word = nn.Embedding(VOCAB, H)
            self.pos, self.typ = nn.Embedding(MAX_POS, H), nn.Embedding(2, H)
            self.ln = nn.LayerNorm(H, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
            self.pool, self.cls = QLinear(H, H), nn.Linear(H, 2)

        def forward(self, ids, mask, seg):
            w = Ternary.apply(self.word.weight, True) if quantize else self.word.weight
            x = F.embedding(ids, w) + self.pos.weight[: ids.shape[1]] + self.typ(seg)
            x = self.ln(x)
            add_mask = (1.0 - mask[:, None, None, :].float()) * -10000.0
            hidden, scores = [x], []
            for layer in self.layers:
                x, s = layer(x, add_mask)
                hidden.append(x)
                scores.append(s)
            return self.cls(torch.tanh(self.pool(x[:, 0]))), hidden, scores

    return Bert


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--seq_lengths", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/distill_speed_torch_cpu.json")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    torch.manual_seed(0)
    F = torch.nn.functional
    teacher, student = build(torch, False)().eval(), build(torch, True)().train()
    student.load_state_dict(teacher.state_dict())
    params = list(student.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)

    def step(ids, mask, seg):
        with torch.no_grad():
            t_logits, t_hidden, t_scores = teacher(ids, mask, seg)
        s_logits, s_hidden, s_scores = student(ids, mask, seg)
        loss = sum(F.mse_loss(s, t) for s, t in zip(s_hidden, t_hidden))
        keep = mask[:, None, None, :].float()  # masked keys: both entries zeroed
        loss = loss + sum(F.mse_loss(s * keep, t * keep) for s, t in zip(s_scores, t_scores))
        loss = loss + (-F.softmax(t_logits, -1) * F.log_softmax(s_logits, -1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(loss)

    rng = np.random.RandomState(0)
    results = []
    for seq in args.seq_lengths:
        b = args.batch_size
        ids = torch.from_numpy(rng.randint(0, VOCAB, (b, seq)))
        lens = rng.randint(seq // 2, seq + 1, b)
        mask = torch.from_numpy((np.arange(seq)[None, :] < lens[:, None]).astype(np.int64))
        seg = torch.zeros(b, seq, dtype=torch.long)
        for _ in range(args.warmup):
            step(ids, mask, seg)
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            step(ids, mask, seg)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        results.append({"seq_length": seq, "median_s_per_step": round(med, 4),
                        "samples_per_s": round(b / med, 2), "step_times_s": [round(t, 3) for t in times]})
        print(f"len {seq}: {b / med:.2f} samples/s ({med:.3f} s/step)", flush=True)
    write_result(args.out, {"benchmark": "PyTorch rendering of the 2-2-8 distillation step (reference)",
                            "framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
                            "batch_size": args.batch_size, "warmup": args.warmup, "steps": args.steps,
                            "results": results})


if __name__ == "__main__":
    main()
