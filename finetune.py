"""Fine-tune the full-precision teacher on a GLUE task (the step before distillation).

    python finetune.py --task_name sts-b --model out/backbone.ckpt \
        --data_dir data/sts-b-128 --output_dir out/teacher --learning_rate 5e-5 --epoch_size 5

--model is a float checkpoint, e.g. one written by scripts/import_hf.py.
"""
import argparse
import sys

from src import cli


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_task_args(ap)
    cli.add_device_args(ap)
    cli.add_data_args(ap)
    ap.add_argument("--model", required=True, type=cli.checkpoint_file,
                    help="float checkpoint to fine-tune (.ckpt, its .json beside)")
    cli.add_train_args(ap, distill=False)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup_logging()
    from src import api

    # device and data-parallel ranks
    rank, group = cli.start_run(args)
    # network (dropout as its config says, 0.1 for BERT), optimizer, loop
    return api.finetune(args.task_name, args.model, cli.job(args), train=cli.train_config(args),
                        rank=rank, group_size=group)


if __name__ == "__main__":
    sys.exit(cli.run_main(main, "finetune"))
