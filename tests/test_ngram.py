"""The shipped n-gram scorer reproduces scikit-learn exactly, fails loudly on bad files, and the predictor
blends it with the weights the model directory names."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from eval.baselines import NgramBaseline
from eval.ensemble import choose_blend, export_ngram
from tests.conftest import LABELED
from triage_model.labeled_data import load_labeled
from triage_model.model_dir import META_FILE, ModelLoadError
from triage_model.ngram import NGRAM_FILE, CharNgramScorer, SortedVocabulary, blend, char_ngrams
from triage_model.normalize import normalize_text
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS

ODD_TEXTS = ["快递三天没到!!  客服  不理人", "ABC 退款 ×3\n\n\t第二行", "", "😡😡 12315", "我的银行卡被盗刷了2980元"]


@pytest.fixture(scope="module")
def small_baseline():
    data = load_labeled(LABELED)
    return NgramBaseline(c_grid=(4.0,)).fit(data.split("train")[:400], data.split("dev")[:120]), data.split("dev")[120:220]


@pytest.fixture(scope="module")
def scorer_file(small_baseline, tmp_path_factory):
    path = tmp_path_factory.mktemp("ngram") / NGRAM_FILE
    export_ngram(small_baseline[0], path)
    return path


def test_char_ngrams_match_scikit_learn_analyzer(small_baseline):
    analyzer = small_baseline[0].vectorizer_.build_analyzer()
    for text in ODD_TEXTS:
        assert char_ngrams(text, (1, 3)) == analyzer(text)


def test_scorer_reproduces_scikit_learn_probabilities(small_baseline, scorer_file):
    baseline, rows = small_baseline
    texts = [r.text for r in rows] + ODD_TEXTS
    expected = baseline.predict_proba(texts)
    got = CharNgramScorer.load(scorer_file).predict_proba([normalize_text(t) for t in texts])
    for head in HEADS:
        np.testing.assert_allclose(got[head], expected[head], atol=1e-5)
        assert got[head].shape == (len(texts), len(HEADS[head]))


def test_scorer_without_a_known_ngram_falls_back_to_the_priors(scorer_file):
    probs = CharNgramScorer.load(scorer_file).predict_proba(["ЖЖЖ"])
    for head in HEADS:
        assert probs[head].sum() == pytest.approx(1.0, abs=1e-5)


def test_sorted_vocabulary_maps_every_ngram_as_the_fitted_dict_does_and_nothing_else(small_baseline):
    fitted = small_baseline[0].vectorizer_.vocabulary_
    vocab = SortedVocabulary(sorted(fitted, key=fitted.__getitem__))
    grams = list(fitted)
    assert vocab.lookup(grams).tolist() == [fitted[g] for g in grams]
    assert len(vocab) == len(fitted) and list(vocab) == sorted(fitted, key=fitted.__getitem__)
    longest = max(grams, key=len)
    strangers = ["ЖЖЖ", longest + "字", longest[:1] + "\0", "", "\0"]  # absent, too long, NUL-padded look-alikes
    assert [g for g in strangers if g in fitted] == []
    assert vocab.lookup(strangers).tolist() == [-1] * len(strangers)
    assert all(g not in vocab for g in strangers) and vocab.get("ЖЖЖ") is None
    with pytest.raises(ValueError, match="repeats"):
        SortedVocabulary(["a", "b", "a"])


def test_corrupt_or_incomplete_scorer_file_raises_model_load_error(scorer_file, tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ModelLoadError, match="unreadable n-gram scorer"):
        CharNgramScorer.load(broken)
    with np.load(scorer_file) as data:
        arrays = {k: data[k] for k in data.files if k != "idf"}
    partial = tmp_path / "partial.npz"
    np.savez(partial, **arrays)
    with pytest.raises(ModelLoadError, match="lacks 'idf'"):
        CharNgramScorer.load(partial)
    arrays["idf"] = np.ones(3, dtype=np.float32)
    np.savez(partial, **arrays)
    with pytest.raises(ModelLoadError, match="idf has 3 entries"):
        CharNgramScorer.load(partial)
    with np.load(scorer_file) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["vocabulary"] = np.array(["重复"] * len(arrays["vocabulary"]))
    np.savez(partial, **arrays)
    with pytest.raises(ModelLoadError, match="unusable n-gram vocabulary"):
        CharNgramScorer.load(partial)


def test_blend_weight_zero_is_the_encoder_and_one_is_the_ngram():
    rng = np.random.default_rng(0)
    enc = {h: rng.dirichlet(np.ones(len(v)), 5).astype(np.float32) for h, v in HEADS.items()}
    ngr = {h: rng.dirichlet(np.ones(len(v)), 5).astype(np.float32) for h, v in HEADS.items()}
    out = blend(enc, ngr, {"category": 0.0, "severity": 1.0, "sentiment": 0.5})
    np.testing.assert_allclose(out["category"], enc["category"])
    np.testing.assert_allclose(out["severity"], ngr["severity"])
    np.testing.assert_allclose(out["sentiment"], (enc["sentiment"] + ngr["sentiment"]) / 2, rtol=1e-6)
    sharper = blend(enc, ngr, {"sentiment": 0.5}, {"sentiment": 0.5})["sentiment"]
    assert (sharper.argmax(1) == out["sentiment"].argmax(1)).all()  # re-calibration never moves a label
    assert (sharper.max(1) >= out["sentiment"].max(1) - 1e-6).all()  # T < 1 sharpens
    np.testing.assert_allclose(sharper.sum(1), 1.0, rtol=1e-5)


def test_choose_blend_keeps_noise_out_and_takes_a_useful_ngram():
    """An n-gram that is pure noise gets weight 0; one that knows what the encoder misses gets weight > 0."""
    rng = np.random.default_rng(1)
    n = 300
    gold = {h: rng.integers(0, len(v), n) for h, v in HEADS.items()}
    enc, useful, noise = {}, {}, {}
    for h, v in HEADS.items():
        k = len(v)
        right = rng.random(n) < 0.6  # the encoder is right on 60 %, the n-gram on the other 40 % too
        enc[h] = np.full((n, k), 0.1 / k)
        enc[h][np.arange(n), np.where(right, gold[h], (gold[h] + 1) % k)] += 0.9
        useful[h] = np.full((n, k), 0.2 / k)
        useful[h][np.arange(n), gold[h]] += 0.8
        noise[h] = rng.dirichlet(np.ones(k), n)
    weights, _, _, curves = choose_blend(enc, noise, gold, beta=None)
    assert all(w <= 0.3 for w in weights.values()), weights
    weights, temperatures, _, _ = choose_blend(enc, useful, gold, beta=None)
    assert all(w > 0 for w in weights.values()), weights
    assert all(t > 0 for t in temperatures.values()), temperatures
    assert len(curves["category"]) > 5


@pytest.fixture()
def blended_model_dir(served_model_dir, scorer_file, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(served_model_dir, model_dir)
    shutil.copy(scorer_file, model_dir / NGRAM_FILE)
    meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
    meta["ngram_weights"] = {"category": 1.0, "severity": 0.0, "sentiment": 0.5}
    meta.pop("ngram_temperatures", None)  # no re-calibration: the served mix is the plain weighted mean
    (model_dir / META_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return model_dir


def test_predictor_serves_the_blend_its_config_names(blended_model_dir, scorer_file):
    predictor = TriagePredictor.from_pretrained(blended_model_dir)
    texts = ["快递三天没到，客服也不回消息", "孩子把玩具的小零件放进嘴里了，太危险"]
    served = predictor.predict_proba(texts)
    encoder = predictor.encoder_proba(texts)
    ngram = CharNgramScorer.load(scorer_file).predict_proba([predictor.prepare(t).text for t in texts])
    np.testing.assert_allclose(served["category"], ngram["category"], atol=1e-6)
    np.testing.assert_allclose(served["severity"], encoder["severity"], atol=1e-6)
    np.testing.assert_allclose(served["sentiment"], (encoder["sentiment"] + ngram["sentiment"]) / 2, atol=1e-6)
    results = predictor.predict(texts)
    assert [r.category.label for r in results] == [HEADS["category"][i] for i in ngram["category"].argmax(1)]


def test_model_that_names_a_blend_without_its_file_refuses_to_load(blended_model_dir):
    (blended_model_dir / NGRAM_FILE).unlink()
    with pytest.raises(ModelLoadError, match=r"ngram\.npz is missing"):
        TriagePredictor.from_pretrained(blended_model_dir)


def test_blend_card_section_is_replaced_not_repeated(tmp_path):
    from eval.ensemble import BLEND_SECTION, write_blend_card_section
    from triage_model.model_dir import CARD_FILE

    (tmp_path / CARD_FILE).write_text("# card\n\n## Limits\n- short texts\n", encoding="utf-8")
    fig = {"macro_f1": 0.8, "accuracy": 0.8, "ece": 0.02}
    summary = {
        "weights": dict.fromkeys(HEADS, 0.5),
        "temperatures": dict.fromkeys(HEADS, 0.8),
        "dev_n": 10,
        "dev": {part: dict.fromkeys(HEADS, fig) for part in ("encoder", "ngram", "blend")},
    }
    write_blend_card_section(tmp_path, summary)
    summary["weights"]["category"] = 0.25
    write_blend_card_section(tmp_path, summary)
    card = (tmp_path / CARD_FILE).read_text(encoding="utf-8")
    assert card.count(BLEND_SECTION) == 1 and "| category | 0.25 |" in card and "## Limits" in card


def test_triage_blend_cli_writes_a_blended_model_that_serves(served_model_dir, tmp_path):
    """End to end on a small data folder: ngram.npz, weights + temperatures in the config, the card section,
    metrics; the blended model loads and its dev macro-F1 is not below the encoder's (weight 0 is a choice)."""
    from typer.testing import CliRunner

    from tests.conftest import write_jsonl
    from triage_cli.main import app
    from triage_model.model_dir import CARD_FILE, METRICS_FILE, read_meta

    data = load_labeled(LABELED)
    rows = [r.model_dump(exclude_none=True) | {"split": s} for s, n in (("train", 500), ("dev", 150)) for r in data.split(s)[:n]]
    write_jsonl(tmp_path / "data" / "complaints" / "rows.jsonl", rows)
    model_dir = tmp_path / "model"
    shutil.copytree(served_model_dir, model_dir)
    result = CliRunner().invoke(app, ["blend", "--model", str(model_dir), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "n-gram weights" in result.output
    meta = read_meta(model_dir)
    assert set(meta.ngram_weights) == set(HEADS) and set(meta.ngram_temperatures) == set(HEADS)
    summary = json.loads((model_dir / METRICS_FILE).read_text(encoding="utf-8"))["blend"]
    for head in HEADS:
        assert summary["dev"]["blend"][head]["macro_f1"] >= summary["dev"]["encoder"][head]["macro_f1"] - 0.02
    assert "Blended character n-gram scorer" in (model_dir / CARD_FILE).read_text(encoding="utf-8")
    predictor = TriagePredictor.from_pretrained(model_dir)
    assert predictor.ngram is not None and predictor.predict(["快递丢了，客服不理"])[0].category.label in HEADS["category"]


def test_recall_threshold_is_the_highest_that_reaches_the_reference_recall():
    """Four 一级 rows at 0.9 / 0.6 / 0.3 / 0.1: recall 0.75 first holds at 0.30, full recall at 0.10;
    a row that is 一级 by argmax counts as flagged whatever the threshold (the served rule)."""
    from triage_model.decision import fit_recall_threshold, recall_at

    p_critical = np.array([0.9, 0.6, 0.3, 0.1, 0.2, 0.05])
    probs = np.stack([p_critical, 1 - p_critical, np.zeros_like(p_critical)], axis=1)
    gold = np.array([0, 0, 0, 0, 1, 1])
    assert fit_recall_threshold(probs, gold, 0, 0.75) == 0.3
    assert fit_recall_threshold(probs, gold, 0, 0.5) == 0.5
    assert fit_recall_threshold(probs, gold, 0, 1.0) == 0.1
    assert recall_at(probs, gold, 0, 0.3) == (0.75, 1.0)
    assert recall_at(probs, gold, 0, 0.95)[0] == 0.5  # 0.9 and 0.6 are the argmax: flagged anyway


def test_paired_recall_threshold_holds_the_reference_recall_in_most_resamples_not_only_on_the_rows_drawn():
    """40 一级 rows. The reference misses rows 0-3; the student scores them 0.45 but rows 4-7 only 0.40-0.25.
    At 0.45 the student has the reference's recall exactly, on different rows: a coin flip on new rows, so
    the 90 % rule lowers the threshold until the student also catches most of rows 4-7. A student that
    misses exactly what the reference misses ties in every resample and keeps the highest threshold."""
    from triage_model.decision import fit_paired_recall_threshold, fit_recall_threshold, recall_at

    p_critical = np.concatenate([[0.45] * 4, [0.40, 0.35, 0.30, 0.25], [0.9] * 32, [0.05] * 40])
    probs = np.stack([p_critical, 1 - p_critical, np.zeros_like(p_critical)], axis=1)
    gold = np.array([0] * 40 + [1] * 40)
    reference_flagged = np.array([False] * 4 + [True] * 36 + [False] * 40)
    assert fit_recall_threshold(probs, gold, 0, 0.9) == 0.45
    threshold, share = fit_paired_recall_threshold(probs, gold, 0, reference_flagged, confidence=0.9)
    assert 0.25 <= threshold <= 0.35 and share >= 0.9
    assert recall_at(probs, gold, 0, threshold)[0] > 0.9
    loose, loose_share = fit_paired_recall_threshold(probs, gold, 0, reference_flagged, confidence=0.5)
    assert loose >= threshold and loose_share >= 0.5
    same = probs.copy()
    same[:4, 0], same[:4, 1] = 0.02, 0.98
    same[4:8, 0], same[4:8, 1] = 0.9, 0.1
    assert fit_paired_recall_threshold(same, gold, 0, reference_flagged, confidence=0.99) == (0.5, 1.0)


def test_f2_threshold_scores_the_served_rule_not_the_bare_probability():
    """Two 一级 rows are already the argmax at 0.45: under the served rule every threshold up to 0.50 catches
    them with full precision, so the fit keeps the highest (0.50). Counting only ``p >= t`` would have scored
    0.50 as catching nothing and lowered the threshold to 0.45 for no gain."""
    from triage_model.decision import fit_fbeta_threshold

    probs = np.array([[0.45, 0.30, 0.25], [0.45, 0.35, 0.20], [0.44, 0.56, 0.0], [0.40, 0.60, 0.0]])
    gold = np.array([0, 0, 1, 1])
    assert fit_fbeta_threshold(probs, gold, 0) == 0.5
    assert fit_fbeta_threshold(probs, np.array([1, 1, 1, 1]), 0) == 0.5  # no 一级 rows: no override


def test_triage_blend_can_match_the_critical_recall_of_the_model_it_replaces(served_model_dir, tmp_path):
    """``--match-recall-of``: the blended model's dev 一级 recall is at least the reference's on the same rows,
    and its threshold is never above the F2 fit (matching only buys recall)."""
    from typer.testing import CliRunner

    from tests.conftest import write_jsonl
    from triage_cli.main import app
    from triage_model.model_dir import METRICS_FILE, read_meta

    data = load_labeled(LABELED)
    rows = [r.model_dump(exclude_none=True) | {"split": s} for s, n in (("train", 400), ("dev", 200)) for r in data.split(s)[:n]]
    write_jsonl(tmp_path / "data" / "complaints" / "rows.jsonl", rows)
    model_dir = tmp_path / "model"
    shutil.copytree(served_model_dir, model_dir)
    args = ["blend", "--model", str(model_dir), "--data-dir", str(tmp_path / "data"), "--match-recall-of", str(served_model_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    matched = json.loads((model_dir / METRICS_FILE).read_text(encoding="utf-8"))["blend"]["critical_recall_match"]
    assert matched["dev_recall"] >= matched["reference_dev_recall"]
    assert matched["f2_threshold"] is None or matched["threshold"] <= matched["f2_threshold"]
    assert read_meta(model_dir).decision_thresholds["severity"]["一级"] == matched["threshold"]
    assert "一级 threshold" in result.output


def test_triage_blend_cli_reports_a_bad_model_dir(tmp_path):
    from typer.testing import CliRunner

    from triage_cli.main import app

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["blend", "--model", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "not a model directory" in result.output
