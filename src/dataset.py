"""MindRecord / TFRecord -> mindspore.dataset pipelines.

One function, ``create_dataset``, for training and evaluation, either format, with sharding
for data parallel. Both formats give identical batches: columns input_ids, input_mask,
segment_ids [B, S] int32 and label_ids [B] (int32 classes, float32 regression scores).
With ``bucket_width`` a training epoch is instead made of length-grouped batches whose S is cut
to fit them (GLUE sentences are far shorter than the padded length: SST-2 averages 13 tokens of
64); the trainer compiles one graph with S left open for them (``any_length_inputs``).
"""
from __future__ import annotations

import os

import numpy as np
import mindspore as ms
import mindspore.dataset as ds
from mindspore.dataset.transforms import TypeCast

from .config import get_task
from .glue import FEATURES, check_record_files, load_meta

FORMATS = ("mindrecord", "tfrecord")


def record_file(records_dir: str, split: str, dataset_type: str) -> str:
    if dataset_type not in FORMATS:
        raise ValueError(f"dataset_type must be one of {FORMATS}, got {dataset_type!r}")
    path = os.path.join(records_dir, f"{split}.{dataset_type}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; convert the task with "
                                f"scripts/convert_glue.py --format {dataset_type}")
    return path


def check_records(records_dir: str, task_name: str, max_seq_length: int = None, verify_files: bool = True) -> dict:
    """The folder's meta.json must name this task (and max length, when one is required);
    ``verify_files``: every record file must have the size and SHA-256 meta.json lists."""
    meta = load_meta(records_dir)
    task = get_task(task_name).name
    if meta["task"] != task:
        raise ValueError(f"{records_dir} holds task {meta['task']}, not {task}")
    if verify_files:
        check_record_files(records_dir)
    if max_seq_length is not None and meta["max_seq_length"] != max_seq_length:
        raise ValueError(f"{records_dir} was converted at max_seq_length {meta['max_seq_length']}, "
                         f"but {max_seq_length} was asked for: convert again or pass "
                         f"--max_seq_length {meta['max_seq_length']}")
    return meta


def _squeeze_label(y):
    # [1] -> [] so batches give label_ids [B]
    return np.reshape(y, ())


def _reader(path: str, meta: dict, spec, dataset_type: str, shard: dict):
    """The split's rows in file order, unbatched (label_ids [1])."""
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
            shard = dict(shard, shard_equal_rows=True)
        data = ds.TFRecordDataset(path, schema=schema, columns_list=list(FEATURES),
                                  shuffle=False, **shard)
    return data


def create_dataset(records_dir: str, split: str, task_name: str, batch_size: int,
                   dataset_type: str = "mindrecord", training: bool = False, seed: int = 42,
                   num_shards: int = 1, shard_id: int = 0, max_seq_length: int = None,
                   bucket_width: int = 0):
    """Batches of one split. Training: shuffled with ``seed``, last partial batch dropped;
    evaluation: file order, every example kept. ``num_shards``/``shard_id`` give each
    data-parallel rank its own slice. ``bucket_width`` > 0 (training only): batches of similar
    length cut to a multiple of it (see ``length_batches``)."""
    # the entry points verified every file's checksum at start; here, each read, the sizes (cheap)
    meta = check_records(records_dir, task_name, max_seq_length, verify_files=False)
    spec = get_task(task_name)
    path = record_file(records_dir, split, dataset_type)
    name = os.path.basename(path)
    check_record_files(records_dir, [name, name + ".db"], hash_files=False)
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} is not in [0, {num_shards})")
    if bucket_width and training:
        return _bucketed(path, meta, spec, dataset_type, batch_size, bucket_width, seed,
                         num_shards, shard_id)
    shard = dict(num_shards=num_shards, shard_id=shard_id) if num_shards > 1 else {}
    if training:  # the shuffle's seed (a global of mindspore.dataset); evaluation reads in order
        ds.config.set_seed(seed)
    # Both readers go in file order; training order comes from one seeded full-size shuffle
    # buffer after them, so MindRecord and TFRecord give the same batches in training too.
    data = _reader(path, meta, spec, dataset_type, shard)
    if training:
        data = data.shuffle(buffer_size=max(int(meta["splits"][split]["examples"]), 2))
    label_type = ms.float32 if spec.is_regression else ms.int32
    data = data.map(operations=[_squeeze_label, TypeCast(label_type)], input_columns="label_ids")
    return data.batch(batch_size, drop_remainder=training)


# ---------------------------------------------------------------- length buckets

def length_batches(lengths: np.ndarray, batch_size: int, seed: int, pool: int = 50) -> list:
    """One epoch of batches (arrays of row indices) grouped by length, like a "sortish" sampler.

    The rows are shuffled with ``seed``; the remainder that fills no batch is dropped; every
    window of ``pool`` batches is sorted by length and cut into batches; the batch order is
    shuffled again. Every kept row appears once, batches hold rows of similar length, and the
    order is a pure function of (lengths, batch_size, seed), so --resume can skip batches.
    """
    rng = np.random.default_rng(seed)
    n_batches = len(lengths) // batch_size
    order = rng.permutation(len(lengths))[:n_batches * batch_size]
    window = pool * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def bucket_length(longest: int, width: int, max_seq_length: int) -> int:
    """The smallest multiple of ``width`` that holds ``longest`` tokens, at most the records'."""
    return min(max_seq_length, -(-int(longest) // width) * width)


_SPLIT_CACHE = {}


def _read_arrays(path: str, meta: dict, spec, dataset_type: str) -> dict:
    """The whole split as numpy arrays (columns of FEATURES), read once per process."""
    key = (path, os.path.getmtime(path))
    if key not in _SPLIT_CACHE:
        rows = {c: [] for c in FEATURES}
        for r in _reader(path, meta, spec, dataset_type, {}).create_dict_iterator(num_epochs=1, output_numpy=True):
            for c in FEATURES:
                rows[c].append(r[c])
        arrays = {c: np.stack(v).astype(np.int32) for c, v in rows.items() if c != "label_ids"}
        arrays["label_ids"] = np.stack(rows["label_ids"]).reshape(-1).astype(
            np.float32 if spec.is_regression else np.int32)
        _SPLIT_CACHE.clear()  # one split at a time: the training split of this run
        _SPLIT_CACHE[key] = arrays
    return _SPLIT_CACHE[key]


class _Buckets:
    """Random-access source: batch i of the epoch, this rank's rows, cut to its bucket length.
    The length is that of the GLOBAL batch, so every data-parallel rank runs the same shapes."""

    def __init__(self, arrays, lengths, batches, width, max_seq_length, batch_size, shard_id):
        self.arrays, self.lengths, self.batches = arrays, lengths, batches
        self.width, self.max_seq_length = width, max_seq_length
        self.rows = slice(shard_id * batch_size, (shard_id + 1) * batch_size)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        idx = self.batches[i]
        cut = bucket_length(self.lengths[idx].max(), self.width, self.max_seq_length)
        mine = idx[self.rows]
        return tuple(self.arrays[c][mine, :cut] for c in FEATURES[:3]) + (self.arrays["label_ids"][mine],)


def any_length_inputs(task_name: str, batch_size: int) -> tuple:
    """Placeholders for ``Cell.set_inputs``: the training columns with S left open. One graph
    then serves every bucket length; a graph per length would each keep its own CPU memory
    (measured: static graphs for 9 lengths of STS-B ran a 24 GB machine out of memory)."""
    label = ms.float32 if get_task(task_name).is_regression else ms.int32
    ids = [ms.Tensor(shape=[batch_size, None], dtype=ms.int32) for _ in range(3)]
    return (*ids, ms.Tensor(shape=[batch_size], dtype=label))


def _bucketed(path, meta, spec, dataset_type, batch_size, width, seed, num_shards, shard_id):
    arrays = _read_arrays(path, meta, spec, dataset_type)
    lengths = arrays["input_mask"].sum(axis=1)
    batches = length_batches(lengths, batch_size * num_shards, seed)
    source = _Buckets(arrays, lengths, batches, width, meta["max_seq_length"], batch_size, shard_id)
    return ds.GeneratorDataset(source, column_names=list(FEATURES), shuffle=False,
                               python_multiprocessing=False, num_parallel_workers=1)


def dataset_size(records_dir: str, split: str) -> int:
    return int(load_meta(records_dir)["splits"][split]["examples"])
