"""Size of the fp32 model vs the packed 2-2-8 file, for MiniLM-L6 and BERT-base shapes.

    python benchmarks/bench_size.py --out benchmarks/results/size.json

Random weights (the packed size does not depend on their values: ternary codes take a fixed
1.6 bits each). MB = 10^6 bytes. The fp32 size counts every model parameter (all embeddings,
Transformer weights and biases, LayerNorm, pooler, classifier); quantizer state is not a
model parameter and is not counted there (it is inside the packed file: 2 floats per node).
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {
    "MiniLM-L6 (6x384)": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "BERT-base (12x768)": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/size.json")
    args = ap.parse_args(argv)
    import numpy as np
    import mindspore as ms
    from src.config import BertConfig, QuantConfig, RunConfig
    from src.packing import save_packed, size_report
    from src.tinybert_model import BertForSequenceClassification
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rows = []
    for name, shape in SHAPES.items():
        for side in ("fp32", "fp16"):
            cfg = BertConfig(num_labels=2, **shape)
            q = QuantConfig()
            net = BertForSequenceClassification(cfg, q)
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "m.tbq")
                save_packed(net, RunConfig(task="sst-2", model=cfg, quant=q), path, side_dtype=side)
                r = size_report(net, path)
            n_q = r["quantized_params"]
            r.update({"model": name, "quant": q.name, "side_dtype": side,
                      "two_bit_4_per_byte_bytes_estimate": r["packed_bytes"] - (n_q + 4) // 5 + (n_q + 3) // 4})
            print(f"{name:20s} side {side}: fp32 {r['fp32_MB']:.1f} MB -> packed {r['packed_MB']:.2f} MB "
                  f"({r['ratio']:.2f}x)")
            rows.append(r)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "fp32 model bytes vs packed .tbq bytes (MB = 1e6 bytes)",
                   "command": "python " + " ".join(sys.argv), "results": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
