"""MindRecord / TFRecord -> mindspore.dataset pipelines.

One function, ``create_dataset``, for training and evaluation, either format, with sharding
for data parallel. Both formats give identical batches: columns input_ids, input_mask,
segment_ids [B, S] int32 and label_ids [B] (int32 classes, float32 regression scores).
"""
from __future__ import annotations

import os

import numpy as np
import mindspore as ms
import mindspore.dataset as ds
from mindspore.dataset.transforms import TypeCast

from .config import get_task
from .glue import FEATURES, load_meta

FORMATS = ("mindrecord", "tfrecord")


def record_file(records_dir: str, split: str, dataset_type: str) -> str:
    if dataset_type not in FORMATS:
        raise ValueError(f"dataset_type must be one of {FORMATS}, got {dataset_type!r}")
    path = os.path.join(records_dir, f"{split}.{dataset_type}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; convert the task with "
                                f"scripts/convert_glue.py --format {dataset_type}")
    return path


def check_records(records_dir: str, task_name: str, max_seq_length: int = None) -> dict:
    """The folder's meta.json must name this task (and max length, when one is required)."""
    meta = load_meta(records_dir)
    task = get_task(task_name).name
    if meta["task"] != task:
        raise ValueError(f"{records_dir} holds task {meta['task']}, not {task}")
    if max_seq_length is not None and meta["max_seq_length"] != max_seq_length:
        raise ValueError(f"{records_dir} was converted at max_seq_length {meta['max_seq_length']}, "
                         f"but {max_seq_length} was asked for: convert again or pass "
                         f"--max_seq_length {meta['max_seq_length']}")
    return meta


def _squeeze_label(y):
    # [1] -> [] so batches give label_ids [B]
    return np.reshape(y, ())


def create_dataset(records_dir: str, split: str, task_name: str, batch_size: int,
                   dataset_type: str = "mindrecord", training: bool = False, seed: int = 42,
                   num_shards: int = 1, shard_id: int = 0, max_seq_length: int = None):
    """Batches of one split. Training: shuffled with ``seed``, last partial batch dropped;
    evaluation: file order, every example kept. ``num_shards``/``shard_id`` give each
    data-parallel rank its own slice."""
    meta = check_records(records_dir, task_name, max_seq_length)
    spec = get_task(task_name)
    path = record_file(records_dir, split, dataset_type)
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} is not in [0, {num_shards})")
    shard = dict(num_shards=num_shards, shard_id=shard_id) if num_shards > 1 else {}
    ds.config.set_seed(seed)
    # Both readers go in file order; training order comes from one seeded full-size shuffle
    # buffer after them, so MindRecord and TFRecord give the same batches in training too.
    if dataset_type == "mindrecord":
        data = ds.MindDataset(path, columns_list=list(FEATURES), shuffle=False, **shard)
    else:
        seq = meta["max_seq_length"]
        schema = ds.Schema()
        for col in ("input_ids", "input_mask", "segment_ids"):
            schema.add_column(col, de_type=ms.int32, shape=[seq])
        schema.add_column("label_ids", de_type=ms.float32 if spec.is_regression else ms.int32,
                          shape=[1])
        if shard:
            shard["shard_equal_rows"] = True
        data = ds.TFRecordDataset(path, schema=schema, columns_list=list(FEATURES),
                                  shuffle=False, **shard)
    if training:
        data = data.shuffle(buffer_size=max(int(meta["splits"][split]["examples"]), 2))
    label_type = ms.float32 if spec.is_regression else ms.int32
    data = data.map(operations=[_squeeze_label, TypeCast(label_type)], input_columns="label_ids")
    return data.batch(batch_size, drop_remainder=training)


def dataset_size(records_dir: str, split: str) -> int:
    return int(load_meta(records_dir)["splits"][split]["examples"])
