"""``triage train``: fine-tune the shared encoder, three heads and the trigger head jointly, calibrate,
write a model dir.

Steps (one function each): load data → tokenize (``datasets``) → train with early stopping on dev
macro-F1 → fit per-head temperatures, the 一级 threshold and the trigger-fusion operating points on dev
→ measure dev and the fixed test split → save weights, tokenizer, metadata, metrics and model card.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup, set_seed

from training.base_model import ensure_base_encoder
from training.checkpoint import EpochCheckpoint
from training.config import TrainConfig
from training.model_card import write_model_card
from training.modeling import MultiTaskTriageModel
from training.trigger_fit import fit_trigger_thresholds
from triage_model.calibration import fit_temperature
from triage_model.decision import fit_fbeta_threshold, sigmoid, softmax
from triage_model.labeled_data import ESCALATION_SET_NAME, LabeledRow, data_hash, escalation_training_rows, load_labeled, trigger_targets
from triage_model.metrics import head_metrics, multilabel_metrics
from triage_model.model_dir import METRICS_FILE, TOKENIZER_FILE, ModelMeta, new_model_version, write_meta
from triage_model.normalize import normalize_text
from triage_model.schema import CRITICAL_SEVERITY, HEADS, TEXT_TRIGGERS, TRIGGER_HEAD, label_to_id, schema_dict
from triage_model.tokenization import encode_texts, load_tokenizer, pad_batch
from triage_model.trigger_decisions import decide_rows, lexicon_states

log = logging.getLogger(__name__)


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def to_dataset(rows: list[LabeledRow], tokenizer, max_length: int) -> Dataset:
    """Rows → a ``datasets.Dataset`` with input ids, one label column per head and the trigger multi-hot."""
    records = [
        {"text": r.text, **{h: label_to_id(h, getattr(r, h)) for h in HEADS}, TRIGGER_HEAD: trigger_targets(r.triggers)} for r in rows
    ]
    empty = {"text": [], **{h: [] for h in HEADS}, TRIGGER_HEAD: []}
    ds = Dataset.from_list(records) if records else Dataset.from_dict(empty)
    return ds.map(
        lambda batch: {"input_ids": encode_texts(tokenizer, [normalize_text(t) for t in batch["text"]], max_length)},
        batched=True,
        desc="tokenize",
    )


def make_collate(pad_id: int):
    def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_batch([b["input_ids"] for b in batch], pad_id)
        out = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        for h in HEADS:
            out[h] = torch.tensor([b[h] for b in batch])
        out[TRIGGER_HEAD] = torch.tensor([b[TRIGGER_HEAD] for b in batch], dtype=torch.float32)
        return out

    return collate


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, group: int = 50) -> list[list[int]]:
    """Shuffled batches of similar-length rows: padding to the longest row in a random batch would
    more than double the compute on CPU (median 41 tokens, max 128). Mega-batches of ``group`` batches
    are sorted by length and cut; the batch order is then shuffled so epochs stay random."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths)).tolist()
    mega = batch_size * group
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def class_weights(rows: list[LabeledRow], head: str, power: float) -> torch.Tensor:
    """(1/frequency)^power, normalised to mean 1 over present classes; absent classes get 1."""
    labels = HEADS[head]
    counts = Counter(getattr(r, head) for r in rows)
    raw = np.array([(1.0 / counts[lab]) ** power if counts[lab] else 0.0 for lab in labels])
    present = raw > 0
    if power == 0 or not present.any():
        return torch.ones(len(labels))
    raw[present] = raw[present] / raw[present].mean()
    raw[~present] = 1.0
    return torch.tensor(raw, dtype=torch.float32)


def trigger_pos_weight(rows: list[LabeledRow], power: float, cap: float = 10.0) -> torch.Tensor:
    """BCE positive weight per text trigger: (negatives/positives)^power, capped — triggers are rare (≈ 5 %)."""
    n = len(rows)
    weights = []
    for t in TEXT_TRIGGERS:
        pos = sum(t in r.triggers for r in rows)
        weights.append(min(cap, ((n - pos) / pos) ** power) if pos and power else 1.0)
    return torch.tensor(weights, dtype=torch.float32)


@torch.no_grad()
def predict_logits(model: MultiTaskTriageModel, loader: DataLoader) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Logits and gold per head (HEADS, then ``TRIGGER_HEAD``: logits [n, 3], gold multi-hot [n, 3])."""
    model.eval()
    names = (*HEADS, TRIGGER_HEAD)
    logits = {h: [] for h in names}
    gold = {h: [] for h in names}
    for batch in loader:
        outs = model(batch["input_ids"], batch["attention_mask"])
        for h, o in zip(names, outs, strict=True):
            logits[h].append(o.numpy())
            gold[h].append(batch[h].numpy())
    k = {**{h: len(v) for h, v in HEADS.items()}, TRIGGER_HEAD: len(TEXT_TRIGGERS)}
    empty_gold = {h: np.zeros(0, dtype=int) for h in HEADS} | {TRIGGER_HEAD: np.zeros((0, k[TRIGGER_HEAD]))}
    return (
        {h: np.concatenate(v) if v else np.zeros((0, k[h])) for h, v in logits.items()},
        {h: np.concatenate(v) if v else empty_gold[h] for h, v in gold.items()},
    )


def unsort(arrays: dict[str, np.ndarray], order: list[int]) -> dict[str, np.ndarray]:
    """Undo a length sort: ``arrays`` row k belongs to row ``order[k]``."""
    out = {}
    for name, arr in arrays.items():
        restored = np.empty_like(arr)
        restored[order] = arr
        out[name] = restored
    return out


def predict_in_row_order(model: MultiTaskTriageModel, ds: Dataset, batch_size: int, collate) -> tuple[dict, dict]:
    """Logits and gold of a tokenized dataset in row order (batched by length for speed)."""
    lengths = [len(ids) for ids in ds["input_ids"]]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    logits, gold = predict_logits(model, DataLoader(ds, batch_sampler=batches, collate_fn=collate))
    return unsort(logits, order), unsort(gold, order)


@dataclass(frozen=True)
class Calibration:
    """Everything fitted on dev after training: what turns logits into served decisions."""

    temperatures: dict[str, float]
    thresholds: dict[str, dict[str, float]]
    trigger_thresholds: dict[str, dict[str, float]]


def calibrate_on_dev(dev_logits: dict, dev_gold: dict, dev_rows: list[LabeledRow], beta: float | None) -> Calibration:
    """Temperatures, the 一级 threshold and the trigger-fusion points, all from the dev split."""
    temperatures = {h: fit_temperature(dev_logits[h], dev_gold[h]) for h in HEADS}
    thresholds = fit_decision_thresholds(dev_logits, dev_gold, temperatures, beta)
    states = lexicon_states([r.text for r in dev_rows])
    trigger_thresholds = fit_trigger_thresholds(sigmoid(dev_logits[TRIGGER_HEAD]), dev_gold[TRIGGER_HEAD], states)
    return Calibration(temperatures, thresholds, trigger_thresholds)


def measure(logits: dict, gold: dict, rows: list[LabeledRow], cal: Calibration) -> dict[str, dict]:
    """Every head's metrics under ``cal``, plus the trigger fusion (lexicon / head / fused) on ``rows``."""
    metrics = all_head_metrics(logits, gold, cal.temperatures, cal.thresholds)
    metrics["trigger_fusion"] = decide_rows(sigmoid(logits[TRIGGER_HEAD]), rows, cal.trigger_thresholds).report()
    return metrics


def data_summary(train_rows: list[LabeledRow], dev_rows: list[LabeledRow], test_rows: list[LabeledRow]) -> dict:
    """Row counts and sources for the model card."""
    return {
        "n_train": len(train_rows),
        "n_dev": len(dev_rows),
        "n_test": len(test_rows),
        "sources": Counter(r.source.split(":")[0] for r in (*train_rows, *dev_rows, *test_rows)),
    }


def all_head_metrics(
    logits: dict, gold: dict, temperatures: dict[str, float], thresholds: dict[str, dict[str, float]] | None = None
) -> dict[str, dict]:
    thresholds = thresholds or {}
    out = {h: head_metrics(softmax(logits[h], temperatures.get(h, 1.0)), gold[h], HEADS[h], thresholds.get(h)) for h in HEADS}
    if TRIGGER_HEAD in logits:
        out[TRIGGER_HEAD] = multilabel_metrics(sigmoid(logits[TRIGGER_HEAD]), gold[TRIGGER_HEAD], TEXT_TRIGGERS)
    return out


def fit_decision_thresholds(logits: dict, gold: dict, temperatures: dict[str, float], beta: float | None) -> dict:
    """The dev-split operating point for 一级 (see ``triage_model.decision``)."""
    if beta is None:
        return {}
    critical = HEADS["severity"].index(CRITICAL_SEVERITY)
    probs = softmax(logits["severity"], temperatures["severity"])
    return {"severity": {CRITICAL_SEVERITY: fit_fbeta_threshold(probs, gold["severity"], critical, beta)}}


def mean_macro_f1(metrics: dict[str, dict]) -> float:
    return float(np.mean([m["macro_f1"] for m in metrics.values()]))


@dataclass
class EarlyStopping:
    """Model selection on dev after each epoch: keeps a copy of the best weights, records the history, and
    says when ``patience`` epochs in a row brought no gain. Shared by training and distillation."""

    patience: int
    best_score: float = -1.0
    best_state: dict | None = None
    best_epoch: int = 0
    stale: int = 0
    stopped: bool = False
    history: list[dict] = field(default_factory=list)

    def epoch_done(self, model: torch.nn.Module, epoch: int, train_loss: float, dev_logits: dict, dev_gold: dict) -> bool:
        """Score the epoch by dev mean macro-F1 (plain argmax); True when training should stop."""
        score = mean_macro_f1(all_head_metrics(dev_logits, dev_gold, {}))
        self.history.append({"epoch": epoch, "train_loss": train_loss, "dev_mean_macro_f1": score})
        log.info("epoch %d: dev mean macro-F1 %.4f", epoch, score)
        tqdm.write(f"epoch {epoch}: dev mean macro-F1 {score:.4f}")
        if score > self.best_score:
            self.best_score, self.best_epoch, self.stale = score, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.stale += 1
        if self.stale >= self.patience:
            tqdm.write(f"early stop: no dev gain for {self.stale} epochs")
            self.stopped = True
        return self.stopped

    def restore_best(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.best_state)

    def record(self) -> dict:
        """Everything but the weights, for an epoch checkpoint."""
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
            "stopped": self.stopped,
            "history": self.history,
        }

    def restore_record(self, record: dict, best_state: dict) -> None:
        self.best_score, self.best_epoch, self.stale = record["best_score"], record["best_epoch"], record["stale"]
        self.stopped, self.history, self.best_state = record["stopped"], list(record["history"]), best_state


def build_optimizer(model: MultiTaskTriageModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.freeze_embeddings:
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    for layer in model.encoder.encoder.layer[: cfg.freeze_layers]:
        layer.requires_grad_(False)
    no_decay = ("bias", "LayerNorm.weight")
    n_layers = len(model.encoder.encoder.layer)

    def depth_from_top(name: str) -> int:
        """0 for the top layer, n_layers for the embeddings: layer-wise lr decay makes lower layers move less."""
        if name.startswith("encoder.layer."):
            return n_layers - 1 - int(name.split(".")[2])
        return n_layers if name.startswith("embeddings.") else 0

    groups: dict[tuple[int, bool], dict] = {}
    for n, p in model.encoder.named_parameters():
        if not p.requires_grad:
            continue
        key = (depth_from_top(n), n.endswith(no_decay))
        lr = cfg.encoder_lr * cfg.layerwise_lr_decay ** key[0]
        groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": 0.0 if key[1] else cfg.weight_decay})["params"].append(p)
    heads = {"params": [*model.heads.parameters(), *model.trigger_head.parameters()], "lr": cfg.head_lr, "weight_decay": 0.0}
    return torch.optim.AdamW([*groups.values(), heads])


def optimizer_step(model: torch.nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler) -> None:
    """One update: backward, clip the gradient norm at 1.0 (a long complaint's batch must not blow up the step),
    step the optimizer and the lr schedule. Shared by fine-tuning and distillation so both train alike."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def _sample(rows: list[LabeledRow], n: int, seed: int) -> list[LabeledRow]:
    """A seeded random subset: files are read in name order, so a head slice would be one source only."""
    import random

    return random.Random(seed).sample(rows, n) if n < len(rows) else rows


def train(cfg: TrainConfig) -> Path:
    """Run the whole training job on ``cfg.data_dir``; returns the output model directory."""
    return train_on_rows(cfg, *load_training_rows(cfg))


def load_training_rows(cfg: TrainConfig) -> tuple[list[LabeledRow], list[LabeledRow], list[LabeledRow], str]:
    """(train, dev, test, data hash) as the config asks: extra trigger-rich train files, fractions, limits."""
    data = load_labeled(cfg.data_dir).require_valid(show=20)
    train_rows, dev_rows, test_rows = data.split("train"), data.split("dev"), data.split("test")
    extra_rows: list[LabeledRow] = []
    if cfg.train_fraction:  # learning curves: the same seeded sample at every fraction grows with it
        train_rows = _sample(train_rows, round(cfg.train_fraction * len(train_rows)), cfg.seed)
    if cfg.limit_train_rows:  # smoke runs: a sample of the complaints only
        train_rows = _sample(train_rows, cfg.limit_train_rows, cfg.seed)
    else:
        for extra in cfg.extra_train_files:
            if extra.name == ESCALATION_SET_NAME:
                raise ValueError(f"{extra}: the escalation eval set is a test set and never trains a model")
            extra_rows += escalation_training_rows(Path(cfg.data_dir) / extra)
        train_rows = train_rows + extra_rows
    if cfg.limit_eval_rows:
        dev_rows, test_rows = _sample(dev_rows, cfg.limit_eval_rows, cfg.seed), _sample(test_rows, cfg.limit_eval_rows, cfg.seed)
    return train_rows, dev_rows, test_rows, data_hash([*data.rows, *extra_rows])


def train_on_rows(
    cfg: TrainConfig, train_rows: list[LabeledRow], dev_rows: list[LabeledRow], test_rows: list[LabeledRow], dhash: str
) -> Path:
    """Fine-tune on explicit splits (the test split is only measured, never used for any choice)."""
    set_seed(cfg.seed)
    commit = git_commit()  # now, not after a 30-minute run during which the work tree may change
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if not train_rows or not dev_rows:
        raise ValueError(f"need train and dev rows, got {len(train_rows)} train / {len(dev_rows)} dev")

    # Warm start (continuing a teacher on new rows costs a few epochs, not a from-scratch run): the directory brings
    # its own tokenizer, so the token ids the weights learned on stay the same.
    base = Path(cfg.init_from) if cfg.init_from else ensure_base_encoder(cfg.base_model_dir)
    tokenizer = load_tokenizer(base / TOKENIZER_FILE)
    model = MultiTaskTriageModel.load(base, cfg.dropout) if cfg.init_from else MultiTaskTriageModel.from_encoder(base, cfg.dropout)
    pad_id = model.config.pad_token_id
    collate = make_collate(pad_id)
    datasets = {
        name: to_dataset(rows, tokenizer, cfg.max_length).remove_columns("text")
        for name, rows in (("train", train_rows), ("dev", dev_rows), ("test", test_rows))
    }
    train_lengths = [len(ids) for ids in datasets["train"]["input_ids"]]

    def eval_logits(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return predict_in_row_order(model, datasets[name], cfg.eval_batch_size, collate)

    weights = {h: class_weights(train_rows, h, cfg.class_weight_power) for h in HEADS}
    losses = {h: torch.nn.CrossEntropyLoss(weight=weights[h]) for h in HEADS}
    losses[TRIGGER_HEAD] = torch.nn.BCEWithLogitsLoss(pos_weight=trigger_pos_weight(train_rows, cfg.class_weight_power))
    loss_names = (*HEADS, TRIGGER_HEAD)

    optimizer = build_optimizer(model, cfg)
    steps = cfg.epochs * math.ceil(len(train_rows) / cfg.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), steps)

    stopper = EarlyStopping(cfg.patience)
    checkpoint = EpochCheckpoint.for_run(cfg, dhash)
    for epoch in range(checkpoint.first_epoch(cfg.resume, model, optimizer, scheduler, stopper).epoch, cfg.epochs + 1):
        if stopper.stopped:
            break
        model.train()
        running = 0.0
        batches = length_grouped_batches(train_lengths, cfg.batch_size, cfg.seed + epoch)
        loader = DataLoader(datasets["train"], batch_sampler=batches, collate_fn=collate)
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch")
        for batch in bar:
            outs = model(batch["input_ids"], batch["attention_mask"])
            loss = sum(cfg.head_loss_weights.get(h, 1.0) * losses[h](o, batch[h]) for h, o in zip(loss_names, outs, strict=True))
            optimizer_step(model, loss, optimizer, scheduler)
            running = 0.9 * running + 0.1 * loss.item() if running else loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
        stop = stopper.epoch_done(model, epoch, running, *eval_logits("dev"))
        checkpoint.save(epoch, model, optimizer, scheduler, stopper)
        if stop:
            break
    stopper.restore_best(model)

    dev_logits, dev_gold = eval_logits("dev")
    cal = calibrate_on_dev(dev_logits, dev_gold, dev_rows, cfg.critical_threshold_beta)
    metrics: dict[str, object] = {"dev": measure(dev_logits, dev_gold, dev_rows, cal), "history": stopper.history}
    if cfg.evaluate_test and test_rows:
        metrics["test"] = measure(*eval_logits("test"), test_rows, cal)

    return save_model_dir(model, base / TOKENIZER_FILE, cfg, cal, metrics, dhash, commit, data_summary(train_rows, dev_rows, test_rows))


def save_model_dir(
    model: MultiTaskTriageModel,
    tokenizer_file: Path,
    cfg: TrainConfig,
    cal: Calibration,
    metrics: dict,
    dhash: str,
    commit: str,
    summary: dict,
) -> Path:
    """Write a self-describing torch model directory: weights, tokenizer, metadata, metrics and card."""
    out = Path(cfg.output_dir)
    if out.exists():
        shutil.rmtree(out)
    model.save(out)
    shutil.copyfile(tokenizer_file, out / TOKENIZER_FILE)
    now = datetime.now(UTC)
    meta = ModelMeta(
        model_name=cfg.model_name,
        model_version=new_model_version(cfg.model_name, dhash, now),
        schema=schema_dict(),
        max_length=cfg.max_length,
        pad_id=model.config.pad_token_id,
        temperatures=cal.temperatures,
        decision_thresholds=cal.thresholds,
        trigger_thresholds=cal.trigger_thresholds,
        data_hash=dhash,
        git_commit=commit,
        seed=cfg.seed,
        created_at=now.isoformat(timespec="seconds"),
        train_config=json.loads(cfg.model_dump_json()),
    )
    write_meta(out, meta)
    (out / METRICS_FILE).write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    write_model_card(out, meta, metrics, summary)
    return out


def recalibrate(model_dir: Path, beta: float | None = 2.0, data_dir: Path | None = None) -> dict:
    """Refit temperatures and the 一级 threshold of a trained model on dev; rewrite its metadata,
    metrics and card. No retraining: for a changed decision rule or new dev rows."""
    from triage_model.model_dir import read_meta

    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    known = {k: v for k, v in meta.train_config.items() if k in TrainConfig.model_fields}  # older models: renamed knobs
    cfg = TrainConfig.model_validate(known)
    data = load_labeled(data_dir or cfg.data_dir)
    model = MultiTaskTriageModel.load(model_dir)
    tokenizer = load_tokenizer(model_dir / TOKENIZER_FILE)
    collate = make_collate(meta.pad_id)

    def logits_of(rows: list[LabeledRow]):
        ds = to_dataset(rows, tokenizer, meta.max_length).remove_columns("text")
        return predict_in_row_order(model, ds, cfg.eval_batch_size, collate)

    dev_rows, test_rows = data.split("dev"), data.split("test")
    dev_logits, dev_gold = logits_of(dev_rows)
    cal = calibrate_on_dev(dev_logits, dev_gold, dev_rows, beta)
    metrics = json.loads((model_dir / METRICS_FILE).read_text(encoding="utf-8"))
    metrics["dev"] = measure(dev_logits, dev_gold, dev_rows, cal)
    metrics["test"] = measure(*logits_of(test_rows), test_rows, cal)
    meta.temperatures, meta.decision_thresholds, meta.trigger_thresholds = cal.temperatures, cal.thresholds, cal.trigger_thresholds
    # Keep every recorded knob, not only TrainConfig's: a student's ``student_layers`` (which serving's run plan reads)
    # and a weight average's ``averaged_from`` are provenance that a recalibration must not erase.
    meta.train_config = {**meta.train_config, "critical_threshold_beta": beta}
    write_meta(model_dir, meta)
    (model_dir / METRICS_FILE).write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    write_model_card(model_dir, meta, metrics, data_summary(data.split("train"), dev_rows, test_rows))
    return {"temperatures": cal.temperatures, "thresholds": cal.thresholds, "trigger_thresholds": cal.trigger_thresholds}
