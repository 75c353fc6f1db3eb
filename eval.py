"""Evaluate a model on a task's dev set and write the metrics.

    python eval.py --checkpoint out/student/best.ckpt --data_dir data/sts-b-128
    python eval.py --checkpoint out/export/student.onnx --data_dir data/sts-b-128

The model is any file this project writes: a checkpoint (network rebuilt from the JSON beside
it), a packed .tbq, or the deployment files of export.py (.mindir, verified against its
manifest; .onnx, run by ONNX Runtime). It is always an explicit path, never "the newest file".
"""
import argparse
import json
import logging
import os
import sys

from src import cli

logger = logging.getLogger("eval")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", "--ckpt_file", "--model_dir", dest="checkpoint", required=True,
                    type=cli.checkpoint_file,
                    help="a .ckpt (config .json beside it), a packed .tbq, an exported .mindir or .onnx")
    ap.add_argument("--task_name", type=cli.task_name, default=None,
                    help="optional check: must be the checkpoint's task")
    cli.add_device_args(ap)
    cli.add_data_args(ap, batch_size_alias=True)
    ap.add_argument("--split", default="dev", choices=["dev", "train", "dev_mm"],
                    help="dev also reports the task's further dev sets (MNLI: mismatched, as mm_acc); "
                         "dev_mm: MNLI's mismatched set alone")
    ap.add_argument("--any_length", action="store_true",
                    help="allow records of another max length than the checkpoint was trained at")
    ap.add_argument("--output_file", default=None, help="metrics JSON (default: <checkpoint>.eval.json)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup_logging()
    from src import api
    from src.config import atomic_write_text
    from src.trainer import set_context
    set_context(args.device_target, args.device_id, args.mode)
    result = api.evaluate(args.checkpoint, args.data_dir, args.split, args.eval_batch_size, args.dataset_type,
                          task=args.task_name, any_length=args.any_length, max_seq_length=args.max_seq_length)
    out = args.output_file or os.path.splitext(args.checkpoint)[0] + ".eval.json"
    atomic_write_text(out, json.dumps(result, indent=2))
    logger.info("%s %s (%s): %s -> %s", result["task"], args.split, result["quant"],
                " ".join(f"{k} {v:.5f}" for k, v in result.items() if isinstance(v, float)), out)
    return result


if __name__ == "__main__":
    sys.exit(cli.run_main(main, "eval"))
