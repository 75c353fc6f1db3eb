"""Export a trained student for deployment.

    python export.py --checkpoint out/student/best.ckpt --output out/export/student
    python export.py --checkpoint out/export/student.tbq --output out/export/again --file_format ONNX
    python export.py --checkpoint out/student/best.ckpt --output out/export/fast --file_format ONNX \
        --calibration_data data/sts-b-128      # fixed activation ranges: the fastest ONNX and MINDIR

Writes, by default, all of:
  student.onnx   integer ONNX model (int8 GEMMs in ONNX Runtime, ternary codes stored at 1.6 bits)
  student.mindir the frozen network (weights fixed at their ternary values) for MindSpore serving
  student.tbq    the packed 2-bit file
  student.json, student.manifest.json, vocab.txt   config, checksums, tokenizer vocabulary
Every model has inputs (input_ids, input_mask, segment_ids) int32 [batch, seq] (dynamic unless
--batch_size / --seq_length fix the MINDIR) and output logits [batch, num_labels], and gives the
outputs eval.py gives for the checkpoint (MINDIR: exactly; ONNX: to float rounding).
"""
import argparse
import logging
import os
import sys

from src import cli

logger = logging.getLogger("export")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # --ckpt_file / --file_name: the model_zoo export.py's spellings of the same two flags
    ap.add_argument("--checkpoint", "--ckpt_file", dest="checkpoint", required=True, type=cli.checkpoint_file,
                    help="a .ckpt (config .json beside it) or a packed .tbq")
    ap.add_argument("--output", "--file_name", dest="output", required=True,
                    help="output path without extension (a .onnx, .mindir, .air or .tbq ending is taken "
                         "off: --output out/student.onnx writes out/student.onnx, .mindir, .tbq)")
    ap.add_argument("--file_format", nargs="+", default=["ONNX", "MINDIR"],
                    choices=["ONNX", "MINDIR", "AIR", "NONE"],
                    help="one or more; AIR needs --device_target Ascend; NONE: only the packed file")
    ap.add_argument("--no_packed", dest="packed", action="store_false", help="do not write the .tbq file")
    ap.add_argument("--packed", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old commands
    ap.set_defaults(packed=True)
    ap.add_argument("--onnx_codes", default="base3", choices=["base3", "int8"],
                    help="ternary codes in the ONNX file: base3 (1.6 bits each, expanded when ONNX Runtime "
                         "loads the model) or int8")
    ap.add_argument("--onnx_ops", default="onnxruntime", choices=["onnxruntime", "standard"],
                    help="integer layers as ONNX Runtime's fused MatMulIntegerToFloat (default), or as "
                         "standard ONNX operators only (MatMulInteger, Cast, Mul), for other runtimes")
    ap.add_argument("--calibration_data", default=None,
                    help="a records folder (scripts/convert_glue.py): the activation ranges of the ONNX model "
                         "and the MINDIR are then fixed, measured on its training split (with ONNX Runtime), "
                         "instead of computed per call "
                         "(faster; predictions no longer depend on the rest of the batch). act_mode "
                         "symmetric only: learned and EMA ranges are fixed already")
    ap.add_argument("--calibration_batches", type=cli.positive_int, default=16,
                    help="batches (of the training batch size) that --calibration_data measures")
    ap.add_argument("--calibration_split", default="train", help="the split of --calibration_data to read")
    ap.add_argument("--dataset_type", default="mindrecord", choices=["mindrecord", "tfrecord"])
    ap.add_argument("--batch_size", type=cli.non_negative_int, default=0, help="MINDIR/AIR: 0 = dynamic")
    ap.add_argument("--seq_length", type=cli.non_negative_int, default=0, help="MINDIR/AIR: 0 = dynamic")
    ap.add_argument("--side_dtype", default="fp32", choices=["fp32", "fp16"],
                    help="precision of the full-precision tensors in the packed file")
    ap.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    ap.add_argument("--device_id", type=int, default=0)
    args = ap.parse_args(argv)
    stem, ext = os.path.splitext(args.output)
    if ext.lower() in (".onnx", ".mindir", ".air", ".tbq"):
        args.output = stem  # not out/student.onnx.onnx beside out/student.onnx.mindir
    if "NONE" in args.file_format:
        if len(args.file_format) > 1:
            ap.error("--file_format NONE cannot be combined with other formats")
        args.file_format = []
    if args.calibration_data is not None and not {"ONNX", "MINDIR", "AIR"} & set(args.file_format):
        ap.error("--calibration_data fixes the activation ranges of the ONNX and MINDIR models: "
                 "add ONNX or MINDIR to --file_format")
    if "AIR" in args.file_format and args.device_target != "Ascend":
        ap.error("--file_format AIR needs --device_target Ascend (an Ascend backend)")
    return args


def main(argv=None):
    args = parse_args(argv)
    cli.setup_logging()
    from src import api
    from src.trainer import set_context
    set_context(args.device_target, args.device_id, "graph")
    written = api.export(args.checkpoint, args.output, formats=args.file_format, packed=args.packed,
                         side_dtype=args.side_dtype, pack_codes=args.onnx_codes == "base3",
                         onnx_ops=args.onnx_ops, batch_size=args.batch_size, seq_length=args.seq_length,
                         calibration_data=args.calibration_data, calibration_batches=args.calibration_batches,
                         calibration_split=args.calibration_split, dataset_type=args.dataset_type)
    for p in written:
        logger.info("wrote %s (%d bytes)", p, os.path.getsize(p))
    return written


if __name__ == "__main__":
    sys.exit(cli.run_main(main, "export"))
