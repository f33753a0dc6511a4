"""A tiny model trained inside the test must learn, and its ONNX export must match torch."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from tests.conftest import LABELED

pytest.importorskip("torch")

CATEGORIES = ("物流配送", "支付与资金安全", "系统故障", "咨询建议")
PER_CLASS = {"train": 12, "dev": 5, "test": 10}
TINY_RECIPE = {"seed": 3, "max_length": 64, "batch_size": 8, "freeze_layers": 10}
"""What every tiny model in this file shares: small, fast, and only the top two layers train."""


@pytest.fixture(scope="module")
def tiny_rows():
    """A few dozen real labeled rows from four categories, taken from the fixed splits (no leakage)."""
    from triage_model.labeled_data import load_labeled

    data = load_labeled(LABELED)
    picked: dict[str, list] = defaultdict(list)
    for split, n in PER_CLASS.items():
        for category in CATEGORIES:
            rows = [r for r in data.split(split) if r.category == category and r.source == "authored"]
            picked[split] += rows[:n]
    return picked


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, base_encoder, tiny_rows):
    from training.config import TrainConfig
    from training.export import export
    from training.train import train_on_rows

    out = tmp_path_factory.mktemp("tiny")
    cfg = TrainConfig(
        output_dir=out / "torch",
        base_model_dir=base_encoder,
        model_name="tiny-test",
        epochs=4,
        encoder_lr=1e-4,
        head_lr=1e-2,
        patience=4,
        **TINY_RECIPE,
    )
    torch_dir = train_on_rows(cfg, tiny_rows["train"], tiny_rows["dev"], tiny_rows["test"], "test-hash")
    report = export(torch_dir, out / "onnx")
    return torch_dir, out / "onnx", report


@pytest.mark.slow
def test_tiny_model_beats_chance_on_held_out_rows(tiny_model, tiny_rows):
    torch_dir, _, _ = tiny_model
    metrics = json.loads((torch_dir / "metrics.json").read_text(encoding="utf-8"))
    accuracy = metrics["test"]["category"]["accuracy"]
    chance = 1 / len(CATEGORIES)
    assert metrics["test"]["category"]["n"] == len(tiny_rows["test"])
    assert accuracy >= chance + 0.25, f"held-out accuracy {accuracy:.2f} vs chance {chance:.2f}"


@pytest.mark.slow
def test_model_directory_is_self_describing(tiny_model):
    torch_dir, onnx_dir, _ = tiny_model
    for name in ("model.safetensors", "tokenizer.json", "triage_config.json", "metrics.json", "MODEL_CARD.md"):
        assert (torch_dir / name).exists(), name
    meta = json.loads((onnx_dir / "triage_config.json").read_text(encoding="utf-8"))
    assert meta["data_hash"] == "test-hash" and meta["onnx_file"] == "model.int8.onnx"
    assert set(meta["temperatures"]) == {"category", "severity", "sentiment"}
    assert "Reproduce" in (onnx_dir / "MODEL_CARD.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_onnx_fp32_logits_match_torch(tiny_model, tiny_rows):
    import onnxruntime as ort
    import torch

    from training.modeling import MultiTaskTriageModel
    from triage_model.normalize import normalize_text
    from triage_model.tokenization import encode_texts, load_tokenizer, pad_batch

    torch_dir, onnx_dir, report = tiny_model
    assert report.fp32_max_abs_diff <= 1e-4
    model = MultiTaskTriageModel.load(torch_dir)
    tok = load_tokenizer(onnx_dir / "tokenizer.json")
    texts = [normalize_text(r.text) for r in tiny_rows["test"]]
    ids, mask = pad_batch(encode_texts(tok, texts, 64), 1)
    with torch.no_grad():
        expected = [t.numpy() for t in model(torch.tensor(ids), torch.tensor(mask))]
    sess = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": np.array(ids, dtype=np.int64), "attention_mask": np.array(mask, dtype=np.int64)})
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-4)


@pytest.mark.slow
def test_exported_predictor_serves_the_tiny_model(tiny_model):
    from triage_model.predictor import TriagePredictor

    _, onnx_dir, _ = tiny_model
    predictor = TriagePredictor.from_pretrained(onnx_dir)
    [result] = predictor.predict(["转账成功了但是钱没到，银行卡却扣款了"])
    assert result.model_version.startswith("tiny-test")
    assert predictor.has_trigger_head and set(result.text_triggers) == {"asks_superior", "repeated_contact", "legal_media_risk"}


@pytest.mark.slow
def test_recalibrate_refits_temperatures_and_trigger_points_without_retraining(tiny_model, tiny_rows, tmp_path):
    """`triage calibrate`: dev-only refit; the test rows are only measured."""
    import shutil

    from tests.conftest import write_jsonl
    from training.train import recalibrate
    from triage_model.model_dir import read_meta, write_meta

    torch_dir, _, _ = tiny_model
    model_dir = tmp_path / "model"
    shutil.copytree(torch_dir, model_dir)
    data = tmp_path / "labeled_data"
    rows = [r.model_dump(exclude_none=True) | {"split": split} for split in ("dev", "test") for r in tiny_rows[split]]
    write_jsonl(data / "complaints" / "rows.jsonl", rows)
    before = read_meta(model_dir)
    before.train_config |= {"student_layers": 4, "averaged_from": [{"model_dir": "runs/a", "weight": 0.5}]}
    write_meta(model_dir, before)  # knobs of a distilled, averaged student, which TrainConfig does not know
    fitted = recalibrate(model_dir, beta=2.0, data_dir=data)
    meta = read_meta(model_dir)
    assert meta.train_config["student_layers"] == 4 and meta.train_config["averaged_from"][0]["weight"] == 0.5
    assert meta.train_config["critical_threshold_beta"] == 2.0
    card = (model_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "triage average runs/a --weight 0.5" in card  # a partial provenance record still gives a card
    assert set(fitted["trigger_thresholds"]) == {"asks_superior", "repeated_contact", "legal_media_risk"}
    assert meta.trigger_thresholds == fitted["trigger_thresholds"]
    assert all(t["veto"] <= t["rescue"] <= t["alone"] for t in meta.trigger_thresholds.values())
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test"]["category"]["n"] == len(tiny_rows["test"])
    assert set(metrics["dev"]["trigger_fusion"]) == {"asks_superior", "repeated_contact", "legal_media_risk"}


@pytest.mark.slow
def test_broken_onnx_file_is_a_clear_load_error(tiny_model, tmp_path):
    import shutil

    from triage_model.model_dir import ModelLoadError
    from triage_model.predictor import TriagePredictor

    _, onnx_dir, _ = tiny_model
    broken = tmp_path / "broken"
    shutil.copytree(onnx_dir, broken)
    (broken / "model.int8.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ModelLoadError, match=r"model\.int8\.onnx"):
        TriagePredictor.from_pretrained(broken)


@pytest.mark.slow
def test_smoke_config_trains_from_the_cli_and_beats_chance(tmp_path, base_encoder):
    """The CI smoke run: `triage train --config training/configs/smoke.yaml` on a tiny slice."""
    from collections import Counter

    from typer.testing import CliRunner

    from tests.conftest import REPO
    from triage_cli.main import app
    from triage_model.labeled_data import load_labeled
    from triage_model.schema import HEADS

    out = tmp_path / "smoke"
    result = CliRunner().invoke(app, ["train", "--config", str(REPO / "training/configs/smoke.yaml"), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["test"]
    test_rows = load_labeled(LABELED).split("test")
    for head, labels in HEADS.items():
        assert metrics[head]["accuracy"] > 1 / len(labels), head
    majority = Counter(r.category for r in test_rows).most_common(1)[0][1] / len(test_rows)
    assert metrics["category"]["accuracy"] > majority, (metrics["category"]["accuracy"], majority)
    # the trigger head ranks held-out rows that carry a trigger above those that do not
    assert metrics["text_triggers"]["macro_auc"] > 0.7, metrics["text_triggers"]["per_class"]


@pytest.mark.slow
def test_warm_start_continues_from_a_trained_model(tiny_model, tiny_rows, tmp_path):
    """`--init-from` continues a trained model (a teacher on new rows): one epoch at a learning rate far too small
    to learn anything still scores like the model it started from; from the base encoder it would be at chance."""
    from training.config import TrainConfig
    from training.train import train_on_rows

    torch_dir, _, _ = tiny_model
    start = json.loads((torch_dir / "metrics.json").read_text(encoding="utf-8"))["test"]["category"]["accuracy"]
    cfg = TrainConfig(
        init_from=torch_dir, output_dir=tmp_path / "warm", model_name="tiny-warm", epochs=1, encoder_lr=1e-9, head_lr=1e-9, **TINY_RECIPE
    )
    warm_dir = train_on_rows(cfg, tiny_rows["train"], tiny_rows["dev"], tiny_rows["test"], "test-hash")
    warm = json.loads((warm_dir / "metrics.json").read_text(encoding="utf-8"))["test"]["category"]["accuracy"]
    assert warm >= 1 / len(CATEGORIES) + 0.25 and abs(warm - start) <= 0.1, (start, warm)
    meta = json.loads((warm_dir / "triage_config.json").read_text(encoding="utf-8"))
    assert meta["train_config"]["init_from"] == str(torch_dir)


@pytest.mark.slow
def test_a_run_cut_off_after_an_epoch_resumes_to_the_same_weights(base_encoder, tiny_rows, tmp_path, monkeypatch):
    """A session that ends mid-run loses at most the epoch in progress: `--resume` continues from the last saved
    epoch and ends with the weights of an uninterrupted run; a changed config refuses the old checkpoint."""
    from safetensors.torch import load_file

    from training.checkpoint import CHECKPOINT_DIR, EpochCheckpoint
    from training.config import TrainConfig
    from training.train import train_on_rows

    recipe = {"base_model_dir": base_encoder, "model_name": "tiny-resume", "epochs": 2, "head_lr": 1e-2, "patience": 4, **TINY_RECIPE}
    rows = (tiny_rows["train"], tiny_rows["dev"], tiny_rows["test"], "test-hash")
    whole = train_on_rows(TrainConfig(output_dir=tmp_path / "whole", **recipe), *rows)
    assert not (whole / CHECKPOINT_DIR).exists()  # a finished run leaves a model directory, not a checkpoint

    save = EpochCheckpoint.save

    def save_then_cut_off(self, epoch, *args):
        save(self, epoch, *args)
        raise KeyboardInterrupt("session ended")

    monkeypatch.setattr(EpochCheckpoint, "save", save_then_cut_off)
    with pytest.raises(KeyboardInterrupt):
        train_on_rows(TrainConfig(output_dir=tmp_path / "cut", **recipe), *rows)
    monkeypatch.setattr(EpochCheckpoint, "save", save)
    assert (tmp_path / "cut" / CHECKPOINT_DIR).exists()

    with pytest.raises(ValueError, match="different config or data"):
        train_on_rows(TrainConfig(output_dir=tmp_path / "cut", resume=True, **{**recipe, "head_lr": 5e-3}), *rows)
    import training.train as train_module

    trained_epochs: list[int] = []
    batches = train_module.length_grouped_batches

    def batches_of_epoch(lengths, batch_size, seed):
        trained_epochs.append(seed - recipe["seed"])
        return batches(lengths, batch_size, seed)

    monkeypatch.setattr(train_module, "length_grouped_batches", batches_of_epoch)
    resumed = train_on_rows(TrainConfig(output_dir=tmp_path / "cut", resume=True, **recipe), *rows)
    assert trained_epochs == [2]  # epoch 1 came from the checkpoint, not from training it again

    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert np.allclose(a[name].numpy(), b[name].numpy(), atol=1e-5), name
    history = [json.loads((d / "metrics.json").read_text(encoding="utf-8"))["history"] for d in (whole, resumed)]
    assert [h["epoch"] for h in history[1]] == [1, 2]
    assert [round(h["dev_mean_macro_f1"], 6) for h in history[0]] == [round(h["dev_mean_macro_f1"], 6) for h in history[1]]


def test_a_bare_boolean_flag_is_true():
    from training.config import parse_overrides

    assert parse_overrides(["--resume", "--epochs", "3"]) == {"resume": True, "epochs": 3}
    assert parse_overrides(["--epochs", "3", "--resume"]) == {"epochs": 3, "resume": True}
    assert parse_overrides(["--resume", "false"]) == {"resume": False}
    with pytest.raises(ValueError, match="needs a value"):
        parse_overrides(["--epochs"])


def test_the_escalation_eval_set_can_never_train_a_model(tmp_path):
    from pathlib import Path

    from training.config import TrainConfig
    from training.train import train

    cfg = TrainConfig(data_dir=LABELED, output_dir=tmp_path / "m", extra_train_files=[Path("escalation/escalation_eval.jsonl")])
    with pytest.raises(ValueError, match="test set"):
        train(cfg)


@pytest.mark.slow
def test_static_int8_scores_a_text_the_same_alone_or_in_a_batch(tiny_model, tiny_rows, tmp_path):
    """Dynamic batching puts strangers in one batch: the static scheme's fixed activation scales keep a
    text's probabilities independent of them, and stay close to fp32."""
    import shutil

    import onnx

    from training.export import _batch_drift, calibration_feeds, quantize_int8
    from triage_model.predictor import TriagePredictor

    _, onnx_dir, _ = tiny_model
    model_dir = tmp_path / "static"
    shutil.copytree(onnx_dir, model_dir)
    feeds = calibration_feeds(model_dir, LABELED, n=32)
    assert len(feeds) == 32 and all(f["input_ids"].shape == f["attention_mask"].shape for f in feeds)
    # the tiny model is the 12-layer encoder: static-ffn-fp32 is the static scheme meant for it
    quantize_int8(model_dir / "model.onnx", model_dir / "model.static.onnx", "static-ffn-fp32", feeds)
    texts = [r.text for r in tiny_rows["test"]]
    assert _batch_drift(model_dir, "model.static.onnx", texts) < 1e-5
    # the embedding table is stored as int8 rows too (it is most of a student's file; fp32 broke the 60 MB limit)
    static_graph = onnx.load(str(model_dir / "model.static.onnx"))
    table = next(i for i in static_graph.graph.initializer if "word_embeddings" in i.name and len(i.dims) == 2)
    assert table.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8), table.name
    static = TriagePredictor.from_pretrained(model_dir, onnx_file="model.static.onnx").encoder_proba(texts)
    fp32 = TriagePredictor.from_pretrained(model_dir, onnx_file="model.onnx").encoder_proba(texts)
    for head in ("category", "severity", "sentiment"):
        agreement = float((static[head].argmax(1) == fp32[head].argmax(1)).mean())
        assert agreement >= 0.8, (head, agreement)
        assert np.abs(static[head] - fp32[head]).sum(1).mean() < 0.2, head  # mean total-variation ×2 (int8 of a tiny model)
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(model_dir / "model.onnx", model_dir / "x.onnx", "static")


@pytest.mark.slow
def test_recover_torch_gives_back_the_exported_weights(tiny_model, tmp_path, base_encoder):
    """`triage recover-torch`: the fp32 graph gives back the trained weights exactly; a static-int8 graph gives
    each weight matrix back within int8 rounding (what a continued distillation starts from)."""
    import shutil

    from safetensors.numpy import load_file

    from training.export import calibration_feeds, quantize_int8
    from training.onnx_recover import recover_model_dir

    torch_dir, onnx_dir, _ = tiny_model
    trained = load_file(str(torch_dir / "model.safetensors"))
    exact = load_file(str(recover_model_dir(onnx_dir, tmp_path / "fp32", base_encoder, onnx_file="model.onnx") / "model.safetensors"))
    assert set(exact) == set(trained)
    for name, weight in trained.items():
        assert np.allclose(exact[name], weight, atol=1e-6), name

    static_dir = tmp_path / "static"
    shutil.copytree(onnx_dir, static_dir)
    quantize_int8(static_dir / "model.onnx", static_dir / "model.static.onnx", "static", calibration_feeds(static_dir, LABELED, n=16))
    approx = load_file(
        str(recover_model_dir(static_dir, tmp_path / "int8", base_encoder, onnx_file="model.static.onnx") / "model.safetensors")
    )
    matrices = [name for name, weight in trained.items() if weight.ndim == 2]
    assert len(matrices) >= 12 * 6 + 3  # every Linear of every layer and the embedding tables
    for name in matrices:
        rel = np.linalg.norm(approx[name] - trained[name]) / np.linalg.norm(trained[name])
        if name.startswith(("heads.", "trigger_head.")):
            assert rel < 1e-6, (name, rel)  # the heads stay fp32
        else:  # int8 rounding is a few % of a matrix; a wrong layer, transpose or scale would be ~100 %
            assert 0 < rel < 0.1, (name, rel)
