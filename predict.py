"""Predict labels (or scores) for raw text with any model this project writes.

    python predict.py --model out/export/student.onnx --input sentences.tsv --output predictions.txt
    echo "a gripping film" | python predict.py --model out/export/student.onnx --input -

With a model whose activation ranges are fixed (export.py --calibration_data, or learned in
training), --sort_by_length batches examples of similar length together, each batch cut to its
longest, and writes the outputs in input order: several times faster on short or mixed-length
texts, the same predictions up to float rounding.

A long run can be interrupted: the batches done so far stay in OUTPUT.partial, and the same
command with --resume continues at the first missing batch (refused if the input, the model or
the options changed); the finished output is identical to an uninterrupted run's.

Input: a .tsv (one example per line: ``text`` or ``text_a<TAB>text_b``, every line with the same
number of fields; --skip_header drops a first line), a .jsonl (objects with "text", or "text_a"
and "text_b"), or - for standard input (tsv). Output: one line per input line, the label name
(classification) or the score (regression), in input order. A malformed line stops the run with
its file and line number before anything is written; the output file is replaced atomically.

Models: .onnx (ONNX Runtime, no MindSpore needed to run it), .mindir, .tbq, .ckpt. The tokenizer
vocabulary is the vocab.txt beside the model (export.py puts it there) unless --vocab_file.
By default every batch is padded to the length the model was trained at and taken in input order,
exactly as eval.py does, so predict.py and eval.py give the same outputs for the same examples;
--dynamic_length cuts each batch to its longest example instead (faster; the 8-bit activation
scales are per batch, so outputs can then differ in the last digits).
"""
import argparse
import logging
import os
import sys

from src import cli

logger = logging.getLogger("predict")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=cli.checkpoint_file, help=".onnx, .mindir, .tbq or .ckpt")
    ap.add_argument("--input", required=True, help=".tsv, .jsonl, or - (stdin, tsv)")
    ap.add_argument("--output", default="-", help="output file (default: stdout)")
    ap.add_argument("--vocab_file", default=None, help="default: vocab.txt beside the model")
    ap.add_argument("--cased", action="store_true", help="do not lower-case (cased vocabularies)")
    ap.add_argument("--skip_header", action="store_true", help="tsv: the first line is a header")
    ap.add_argument("--max_seq_length", type=cli.positive_int, default=None,
                    help="default: the length the model was trained at (else the task table's)")
    ap.add_argument("--batch_size", type=cli.positive_int, default=cli.EVAL_BATCH_SIZE)
    ap.add_argument("--dynamic_length", action="store_true", help="cut each batch to its longest example")
    ap.add_argument("--sort_by_length", action="store_true",
                    help="models with fixed activation ranges: batch examples of similar length together (within "
                         "windows of --sort_window examples), each batch cut to its longest; output in input order")
    ap.add_argument("--sort_window", type=cli.positive_int, default=None,
                    help="with --sort_by_length: examples sorted together (and kept together by --resume); 2048")
    ap.add_argument("--threads", type=cli.non_negative_int, default=0, help="ONNX Runtime threads (0: all cores)")
    ap.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"],
                    help="for .mindir/.tbq/.ckpt models")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --output")
    ap.add_argument("--stop_after", type=cli.non_negative_int, default=0,
                    help="stop after N batches (windows with --sort_by_length) as if interrupted (to exercise --resume)")
    args = ap.parse_args(argv)
    if args.sort_window is not None and not args.sort_by_length:
        ap.error("--sort_window applies to --sort_by_length only")
    args.sort_window = args.sort_window or 2048
    return args


def main(argv=None):
    args = parse_args(argv)
    cli.setup_logging(sys.stderr)  # stdout may carry the predictions
    from src.config import get_task, vocab_path_for
    from src.glue import sha256_file
    from src.predict_io import PredictionSink, batches, check_task_shape, examples_digest, read_examples
    from src.tokenization import BertTokenizer
    vocab = args.vocab_file or vocab_path_for(args.model)
    if not os.path.isfile(vocab):
        raise FileNotFoundError(f"vocab file {vocab} does not exist; pass --vocab_file (the vocab.txt of the "
                                f"model's backbone)")
    examples = read_examples(args.input, args.skip_header)  # every line checked before any work
    if not args.model.endswith(".onnx"):
        from src.trainer import set_context
        set_context(args.device_target, 0, "graph")
    from src.deploy import load_predictor
    model = load_predictor(args.model, threads=args.threads)
    spec = get_task(model.run.task)
    check_task_shape(examples, spec.name, spec.columns[1] is not None, "<stdin>" if args.input == "-" else args.input)
    max_len = args.max_seq_length or (model.run.train.max_seq_length if model.run.train else spec.max_seq_length)
    tok = BertTokenizer(vocab, do_lower_case=not args.cased)
    if args.sort_by_length and not model.fixed_ranges:
        raise ValueError(f"--sort_by_length: {args.model} searches its activation ranges per batch, so its outputs "
                         f"depend on which examples share a batch; export it with --calibration_data (fixed ranges), "
                         f"or use --dynamic_length")
    if model.fixed_ranges and not (args.dynamic_length or args.sort_by_length) and len(examples) > args.batch_size:
        logger.info("%s has fixed activation ranges: --sort_by_length (batches of similar length, each cut to its "
                    "longest) gives the same predictions up to float rounding, several times faster on short and "
                    "mixed-length texts", args.model)
    import numpy as np
    from tqdm import tqdm
    # what a resumed run must share with the interrupted one to continue its output
    identity = {"examples": examples_digest(examples), "model_sha256": sha256_file(args.model),
                "vocab_sha256": sha256_file(vocab),
                "max_seq_length": max_len, "batch_size": args.batch_size, "dynamic_length": args.dynamic_length,
                "sort_window": args.sort_window if args.sort_by_length else 0, "cased": args.cased}
    # the output is written (and resumed) in units: a batch, or a window of batches sorted by length
    unit = args.sort_window if args.sort_by_length else args.batch_size
    sink = PredictionSink(args.output, identity, unit, len(examples), args.resume)
    if sink.done:
        logger.info("resuming %s: %d of %d predictions were written", args.output, sink.done, len(examples))
    starts = range(sink.done, len(examples), unit)
    try:
        # progress on stderr when it is a terminal (stdout may carry the predictions)
        for u, start in enumerate(tqdm(starts, desc="predict", unit="window" if args.sort_by_length else "batch",
                                       disable=None, mininterval=2.0, file=sys.stderr)):
            if args.stop_after and u == args.stop_after:
                logger.info("stopped after %d units (--stop_after): %d of %d predictions written",
                            u, sink.done, len(examples))
                return None
            chunk = examples[start:start + unit]
            lines = [""] * len(chunk)
            for pos, ids, mask, seg in batches(tok, chunk, max_len, args.batch_size, args.dynamic_length,
                                               args.sort_by_length):
                logits = model(ids, mask, seg)  # [b, num_labels]
                values = ([f"{v:.6f}" for v in logits.reshape(-1)] if spec.is_regression
                          else [spec.labels[k] for k in np.argmax(logits, axis=-1)])
                for p, v in zip(pos, values):
                    lines[p] = v
            sink.write(lines)
        sink.finish()
    except KeyboardInterrupt:
        if args.output != "-":
            logger.info("%d of %d predictions are kept in %s.partial; the same command with --resume "
                        "continues", sink.done, len(examples), args.output)
        raise
    finally:
        sink.close()
    logger.info("%d predictions (%s, %s) -> %s", len(examples), model.run.task, model.run.quant.name,
                "stdout" if args.output == "-" else args.output)
    return None


if __name__ == "__main__":
    sys.exit(cli.run_main(main, "predict"))
