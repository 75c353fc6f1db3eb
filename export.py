"""Export a checkpoint for deployment: MINDIR (or AIR on Ascend), and the packed 2-bit file.

    python export.py --checkpoint out/student/best.ckpt --file_format MINDIR --output out/student/model

The MINDIR graph computes the quantized weights and the 8-bit activation fake-quant exactly
as evaluation does; inputs are (input_ids, input_mask, segment_ids) int32 [batch, seq] with
dynamic batch and sequence length unless --batch_size/--seq_length fix them.
"""
import argparse
import json
import logging
import os
import sys

from src import cli

logger = logging.getLogger("export")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a .ckpt (config .json beside it)")
    ap.add_argument("--output", required=True, help="output path without extension")
    ap.add_argument("--file_format", default="MINDIR", choices=["MINDIR", "AIR", "NONE"],
                    help="NONE: write only the packed file")
    ap.add_argument("--batch_size", type=int, default=0, help="0: dynamic")
    ap.add_argument("--seq_length", type=int, default=0, help="0: dynamic")
    ap.add_argument("--packed", action="store_true", help="also write <output>.tbq (packed 2-bit weights)")
    ap.add_argument("--side_dtype", default="fp32", choices=["fp32", "fp16"],
                    help="precision of the full-precision tensors in the packed file")
    ap.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    ap.add_argument("--device_id", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup_logging()
    import numpy as np
    import mindspore as ms
    from src.checkpoint import load_network
    from src.tinybert_model import LogitsOnly
    from src.trainer import set_context
    set_context(args.device_target, args.device_id, "graph")
    net, run = load_network(args.checkpoint)
    net.set_train(False)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    written = []
    if args.file_format != "NONE":
        if args.file_format == "AIR" and args.device_target != "Ascend":
            raise ValueError("AIR export needs --device_target Ascend (an Ascend backend)")
        shape = [args.batch_size or None, args.seq_length or None]
        if None in shape:
            inputs = [ms.Tensor(shape=shape, dtype=ms.int32) for _ in range(3)]
        else:
            inputs = [ms.Tensor(np.zeros(shape, np.int32)) for _ in range(3)]
        ms.export(LogitsOnly(net), *inputs, file_name=args.output, file_format=args.file_format)
        written.append(args.output + "." + args.file_format.lower())
    if args.packed:
        from src.config import atomic_write_text
        from src.packing import save_packed, size_report
        path = args.output + ".tbq"
        save_packed(net, run, path, side_dtype=args.side_dtype)
        written.append(path)
        report = size_report(net, path)
        atomic_write_text(args.output + ".size.json", json.dumps(report, indent=2) + "\n")
        written.append(args.output + ".size.json")
        logger.info("%s", report)
    for p in written:
        logger.info("wrote %s (%d bytes)", p, os.path.getsize(p))
    return written


if __name__ == "__main__":
    sys.exit(cli.run_main(main, "export"))
