"""Distillation loss cell, train-one-step cell, optimizer and learning-rate schedule.

The weight quantizers themselves live in src/quant.py (numerics) and are attached to the
network by cell type in src/tinybert_model.py; this module trains that network:

  DistillLoss   student(q(w)) vs frozen teacher: hidden-state MSE (embedding output and every
                layer), attention-score MSE (masked entries zeroed), prediction loss (soft CE,
                or MSE for regression), optional gold-label loss.
  TaskLoss      plain fine-tuning loss (cross-entropy / MSE) for the full-precision teacher.
  TrainOneStep  forward, backward to the latent full-precision weights (STE), gradient
                all-reduce in data-parallel mode, global-norm clip, AdamW step, and the LAT
                curvature refresh d = sqrt(v) + eps.
"""
from __future__ import annotations

from typing import List, Tuple

import mindspore as ms
from mindspore import nn, ops
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from .config import DistillConfig, QuantConfig, TrainConfig
from .tinybert_model import QuantWeightCell, set_compute_dtype
from .quant import ActQuant


def layer_map(student_layers: int, teacher_layers: int) -> Tuple[List[int], List[int]]:
    """Teacher indices for the student's hidden states (0..Ls) and attention maps (0..Ls-1).

    Equal depths map one to one; a teacher k = Lt/Ls times deeper maps student layer i to
    teacher layer (i+1)k - 1 (hidden state index (i+1)k), the embedding output to itself.
    """
    if teacher_layers % student_layers:
        raise ValueError(f"teacher depth {teacher_layers} is not a multiple of student depth "
                         f"{student_layers}")
    k = teacher_layers // student_layers
    hidden = [0] + [(i + 1) * k for i in range(student_layers)]
    attn = [(i + 1) * k - 1 for i in range(student_layers)]
    return hidden, attn


def soft_cross_entropy(student_logits, teacher_logits):
    """mean over batch and classes of -softmax(t) * log_softmax(s) (the original's definition)."""
    return (-ops.softmax(teacher_logits, axis=-1) * ops.log_softmax(student_logits, axis=-1)).mean()


def mean_square(d):
    """mean(d^2). Rows first, then the row sums: on CPU a two-stage reduction is several times
    faster than one full reduction, and Square is cheaper than the Pow of ops.mse_loss."""
    return ops.square(d).sum(axis=-1).sum() / d.size


def mse(a, b):
    return mean_square(a - b)


def masked_score_mse(s_scores, t_scores, key_keep):
    """MSE of attention scores [B, nh, S, S] with the padded key columns zeroed in both.

    Padded columns hold raw + (-10000): left in, they would dominate the loss. key_keep
    [B, 1, 1, S] is 1 for real tokens, 0 for padding; (s - t) * 0 is exactly the zeroed entry.
    """
    return mean_square((s_scores - t_scores) * key_keep)


def token_mse(a, b, keep):
    """MSE of hidden states [B, S, H] over the real tokens only: keep [B, S, 1] is 1 for real
    tokens, 0 for padding, and the mean divides by (real tokens * H)."""
    return ops.square((a - b) * keep).sum(axis=-1).sum() / (keep.sum() * a.shape[-1])


def pair_score_mse(s_scores, t_scores, pair_keep, n_pairs):
    """MSE of attention scores [B, nh, S, S] over real query x real key pairs only.

    pair_keep [B, 1, S, S] is 1 where both the query and the key are real tokens; n_pairs is
    its sum, so the mean divides by (real pairs * heads) and padding changes nothing."""
    d = (s_scores - t_scores) * pair_keep
    return ops.square(d).sum(axis=-1).sum() / (n_pairs * s_scores.shape[1])


def attention_kl(s_scores, t_scores, row_keep, n_rows):
    """KL(teacher || student) of the attention probabilities, per query row, mean over rows.

    Scores [B, nh, S, S] carry the key mask (-10000 on padded keys): both softmaxes give those
    keys probability 0, so they add nothing. row_keep [B, 1, S, 1] selects the query rows that
    count (real tokens, or every position) and n_rows is their number times the heads."""
    log_t = ops.log_softmax(t_scores, axis=-1)
    log_s = ops.log_softmax(s_scores, axis=-1)
    kl = (ops.exp(log_t) * (log_t - log_s)).sum(axis=-1, keepdims=True)  # [B, nh, S, 1]
    return (kl * row_keep).sum() / n_rows


class DistillLoss(nn.Cell):
    """Scalar distillation loss of a student against a frozen teacher.

    ``terms`` names the loss terms in use (weight > 0) among hidden, attention, pred and gold;
    with ``return_terms`` set (TrainOneStep sets it) the cell returns (loss, [len(terms)] of
    their unweighted values), which the training log and metrics.json report."""

    def __init__(self, student: nn.Cell, teacher: nn.Cell, dcfg: DistillConfig):
        super().__init__()
        self.student = student
        self.teacher = teacher
        for p in teacher.get_parameters():
            p.requires_grad = False
        self.teacher.set_train(False)
        s_cfg, t_cfg = student.config, teacher.config
        if s_cfg.hidden_size != t_cfg.hidden_size or s_cfg.num_labels != t_cfg.num_labels:
            raise ValueError("student and teacher differ in hidden size or number of labels")
        self.hidden_map, self.attn_map = layer_map(s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
        self.regression = s_cfg.num_labels == 1
        self.dcfg = dcfg
        self.terms = tuple(name for name, w in (("hidden", dcfg.hidden_weight), ("attention", dcfg.attention_weight),
                                                ("pred", dcfg.pred_weight), ("gold", dcfg.label_weight)) if w > 0)
        self.return_terms = False

    def set_train(self, mode=True):
        # The teacher always runs in inference mode (no dropout, no observer updates).
        super().set_train(mode)
        self.teacher.set_train(False)
        return self

    def construct(self, input_ids, input_mask, segment_ids, label_ids):
        s_logits, s_hidden, s_scores = self.student(input_ids, input_mask, segment_ids)
        t_logits, t_hidden, t_scores = self.teacher(input_ids, input_mask, segment_ids)
        t_logits = ops.stop_gradient(t_logits)
        d = self.dcfg
        loss = 0.0
        terms = []
        keep = input_mask.astype(ms.float32)  # [B, S]
        if d.hidden_weight > 0:
            h = 0.0
            tok_keep = keep.reshape(keep.shape[0], -1, 1)  # [B, S, 1]
            for i, j in enumerate(self.hidden_map):
                t_h = ops.stop_gradient(t_hidden[j])
                h = h + (token_mse(s_hidden[i], t_h, tok_keep) if d.token_mean else mse(s_hidden[i], t_h))
            loss = loss + d.hidden_weight * h
            terms.append(h)
        if d.attention_weight > 0:
            a = self._attention_term(s_scores, t_scores, keep)
            loss = loss + d.attention_weight * a
            terms.append(a)
        if d.pred_weight > 0:
            if self.regression:
                target = t_logits if d.regression_target == "teacher" else \
                    label_ids.astype(ms.float32).reshape(-1, 1)
                p = mse(s_logits, target)
            else:
                p = soft_cross_entropy(s_logits, t_logits)
            loss = loss + d.pred_weight * p
            terms.append(p)
        if d.label_weight > 0:
            g = task_loss(s_logits, label_ids, self.regression)
            loss = loss + d.label_weight * g
            terms.append(g)
        if self.return_terms:
            return loss, ops.stop_gradient(ops.stack(terms))
        return loss

    def _attention_term(self, s_scores, t_scores, keep):
        """The attention term summed over the mapped layers; keep [B, S] is 1 on real tokens."""
        d = self.dcfg
        a = 0.0
        if d.attention_loss == "kl":
            # the query rows that count: real tokens (token_mean) or every position
            row_keep = keep.reshape(keep.shape[0], 1, -1, 1)  # [B, 1, S, 1]
            if not d.token_mean:
                row_keep = ops.ones_like(row_keep)
            n_rows = row_keep.sum() * s_scores[0].shape[1]
            for i, j in enumerate(self.attn_map):
                a = a + attention_kl(s_scores[i], ops.stop_gradient(t_scores[j]), row_keep, n_rows)
            return a
        key_keep = keep.reshape(keep.shape[0], 1, 1, -1)  # [B, 1, 1, S]
        pair_keep = key_keep * keep.reshape(keep.shape[0], 1, -1, 1)  # [B, 1, S, S] real q x real k
        n_pairs = pair_keep.sum()
        for i, j in enumerate(self.attn_map):
            t_s = ops.stop_gradient(t_scores[j])
            a = a + (pair_score_mse(s_scores[i], t_s, pair_keep, n_pairs) if d.token_mean
                     else masked_score_mse(s_scores[i], t_s, key_keep))
        return a


def task_loss(logits, label_ids, regression: bool):
    """Cross-entropy on int labels, or MSE on float targets for a 1-output head."""
    if regression:
        return ops.mse_loss(logits.reshape(-1), label_ids.astype(ms.float32).reshape(-1))
    return ops.cross_entropy(logits, label_ids.astype(ms.int32).reshape(-1))


class TaskLoss(nn.Cell):
    """Fine-tuning loss of a (teacher) network on gold labels (one term, ``gold``)."""

    def __init__(self, net: nn.Cell):
        super().__init__()
        self.net = net
        self.regression = net.config.num_labels == 1
        self.terms = ("gold",)
        self.return_terms = False

    def construct(self, input_ids, input_mask, segment_ids, label_ids):
        logits = self.net(input_ids, input_mask, segment_ids)[0]
        loss = task_loss(logits, label_ids, self.regression)
        if self.return_terms:
            return loss, ops.stop_gradient(loss.reshape(1))
        return loss


class WarmupLinearLR(LearningRateSchedule):
    """lr * step/warmup for step < warmup, then linear decay to 0 at total_steps."""

    def __init__(self, learning_rate: float, warmup_steps: int, total_steps: int):
        super().__init__()
        self.lr = float(learning_rate)
        self.warmup = float(max(warmup_steps, 0))
        self.total = float(max(total_steps, 1))

    def construct(self, global_step):
        step = global_step.astype(ms.float32)
        decay = ops.maximum(self.total - step, 0.0) / max(self.total - self.warmup, 1.0)
        if self.warmup > 0:
            decay = ops.minimum(step / self.warmup, decay)
        return self.lr * decay


def build_optimizer(net: nn.Cell, tcfg: TrainConfig, total_steps: int, qcfg: QuantConfig = None):
    """AdamWeightDecay over ``net``'s trainable parameters, decay on matrices only (biases and
    LayerNorm are 1-D: no decay). Learned activation clips (chosen by cell type) form a third
    group without decay at ``qcfg.act_clip_lr_scale`` times the learning rate."""
    clip_ids = {id(p) for _, cell in net.cells_and_names() if isinstance(cell, ActQuant)
                for p in cell.trainable_params()}
    params = [p for p in net.trainable_params() if id(p) not in clip_ids]
    warmup = int(total_steps * tcfg.warmup_ratio)
    groups = [{"params": [p for p in params if len(p.shape) >= 2], "weight_decay": tcfg.weight_decay},
              {"params": [p for p in params if len(p.shape) < 2], "weight_decay": 0.0}]
    if clip_ids:
        if qcfg is None:
            raise ValueError("the network has learned activation clips: build_optimizer needs its QuantConfig")
        groups.append({"params": [p for p in net.trainable_params() if id(p) in clip_ids], "weight_decay": 0.0,
                       "lr": WarmupLinearLR(tcfg.learning_rate * qcfg.act_clip_lr_scale, warmup, total_steps)})
    lr = WarmupLinearLR(tcfg.learning_rate, warmup, total_steps)
    return nn.AdamWeightDecay(groups, learning_rate=lr, beta1=0.9, beta2=0.999, eps=tcfg.adam_eps)


class TrainOneStep(nn.TrainOneStepCell):
    """One optimisation step with global-norm clipping and the LAT curvature refresh.

    Gradients reach the latent full-precision weights through the STE bprops of the
    quantizers. In DATA_PARALLEL mode the parent's grad_reducer averages them across ranks.
    ``tcfg`` with compute_type fp16: the loss network's matrix products run in float16
    (``set_compute_dtype``) under a dynamic loss scale: the gradients of the scaled loss are
    unscaled, and a step whose gradients overflow is skipped (no update) and halves the scale;
    ``loss_scale_window`` clean steps double it. The scale lives in the cell (saved with the
    training state). Returns (loss, terms, overflow): the loss cell's named terms
    (``loss_net.terms``), unweighted, and whether the step was skipped.
    """

    def __init__(self, loss_net: nn.Cell, optimizer: nn.Optimizer, clip_norm: float,
                 student: nn.Cell = None, qcfg: QuantConfig = None, tcfg: TrainConfig = None):
        loss_net.return_terms = True  # before the parent wraps it
        super().__init__(loss_net, optimizer)
        self.terms = loss_net.terms
        self.clip_norm = float(clip_norm)
        self.scaled = tcfg is not None and tcfg.compute_type == "fp16"
        if self.scaled:
            set_compute_dtype(loss_net, ms.float16)
            self.loss_scale = ms.Parameter(ms.Tensor(tcfg.loss_scale, ms.float32), name="loss_scale",
                                           requires_grad=False)
            self.clean_steps = ms.Parameter(ms.Tensor(0, ms.int32), name="clean_steps", requires_grad=False)
            self.scale_window = int(tcfg.loss_scale_window)
        lat_d, lat_v = [], []
        if student is not None and qcfg is not None and qcfg.ternarizer == "lat":
            v_by_param = {id(p): v for p, v in zip(optimizer.parameters, optimizer.moments2)}
            for _, cell in student.cells_and_names():
                if isinstance(cell, QuantWeightCell) and cell.lat:
                    lat_d.append(cell.lat_d)
                    lat_v.append(v_by_param[id(cell.weight)])
        self.lat_eps = qcfg.lat_eps if qcfg is not None else 0.0
        self.lat_d = ms.ParameterTuple(lat_d) if lat_d else None
        self.lat_v = ms.ParameterTuple(lat_v) if lat_v else None

    def construct(self, *inputs):
        loss, terms = self.network(*inputs)
        scale = self.loss_scale * 1.0 if self.scaled else ops.fill(loss.dtype, (), self.sens)
        # the terms are reported, not trained: their sensitivity is zero
        sens = (ops.fill(loss.dtype, loss.shape, 1.0) * scale, ops.zeros_like(terms))
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.grad_reducer(grads)
        overflow = ops.zeros((), ms.bool_)
        if self.scaled:
            inv = 1.0 / scale
            grads = tuple(g * inv for g in grads)
            overflow = ops.logical_not(ops.stack([ops.isfinite(g).all() for g in grads]).all())
            overflow = ops.depend(overflow, self._update_scale(scale, overflow))
        grads = ops.clip_by_global_norm(grads, self.clip_norm)
        if self.scaled:
            if not overflow:
                loss = ops.depend(loss, self.optimizer(grads))
        else:
            loss = ops.depend(loss, self.optimizer(grads))
        if self.lat_d is not None:
            for i in range(len(self.lat_d)):
                loss = ops.depend(loss, ops.assign(self.lat_d[i],
                                                   ops.sqrt(self.lat_v[i]) + self.lat_eps))
        return loss, terms, overflow

    def _update_scale(self, scale, overflow):
        """overflow: scale / 2 (at least 1); else one more clean step, and x 2 after the window."""
        clean = ops.select(overflow, ops.zeros_like(self.clean_steps), self.clean_steps + 1)
        grow = clean >= self.scale_window
        new = ops.select(overflow, ops.maximum(scale * 0.5, 1.0), ops.select(grow, scale * 2.0, scale))
        clean = ops.select(grow, ops.zeros_like(clean), clean)
        return ops.depend(ops.assign(self.loss_scale, new), ops.assign(self.clean_steps, clean))
