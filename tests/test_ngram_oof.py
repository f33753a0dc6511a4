"""Out-of-fold n-gram scores for blend-aware distillation: each text is scored by an n-gram that never saw the
train rows it was made from, a text joined across folds has no score, and the file belongs to exactly its texts."""

from __future__ import annotations

import numpy as np
import pytest

from eval.ngram_oof import MIXED, UNLABELED, fold_of, out_of_fold_ngram_probs, text_fold
from tests.conftest import LABELED
from triage_model.distill_targets import load_ngram_probs, save_ngram_probs
from triage_model.labeled_data import load_labeled
from triage_model.schema import HEADS, label_to_id


def test_a_rows_fold_is_stable_and_a_text_joined_across_folds_has_none():
    assert fold_of("au-esc-a-0001", 4) == fold_of("au-esc-a-0001", 4)
    assert {fold_of(f"row-{i}", 4) for i in range(200)} == {0, 1, 2, 3}
    a, b = next((f"row-{i}", f"row-{j}") for i in range(50) for j in range(50) if fold_of(f"row-{i}", 4) != fold_of(f"row-{j}", 4))
    assert text_fold([a], 4) == fold_of(a, 4) == text_fold([a, a], 4)
    assert text_fold([a, b], 4) == MIXED
    assert text_fold([], 4) == UNLABELED


def test_train_rows_are_scored_out_of_fold_not_by_an_ngram_that_memorised_them():
    data = load_labeled(LABELED)
    train, dev = data.split("train")[:400], data.split("dev")[:100]
    other = next(r for r in train[1:] if fold_of(r.id, 4) != fold_of(train[0].id, 4))
    texts = [r.text for r in train] + ["快递三天没到，客服也不回消息", train[0].text + other.text]
    row_ids = [(r.id,) for r in train] + [(), (train[0].id, other.id)]
    probs, available, provenance = out_of_fold_ngram_probs(texts, row_ids, train, dev, folds=4)
    assert available.tolist() == [True] * (len(train) + 1) + [False]
    assert not probs["category"][-1].any(), "a pair joined across folds gets no score"
    assert set(provenance["chosen_c"]) == {"all", "fold0", "fold1", "fold2", "fold3"}
    for h in HEADS:
        assert np.allclose(probs[h][:-1].sum(-1), 1.0, atol=1e-4)
    gold = np.array([label_to_id("category", r.category) for r in train])
    oof_right = (probs["category"][: len(train)].argmax(-1) == gold).mean()
    from eval.baselines import NgramBaseline

    memorised = NgramBaseline().fit(train, dev).predict_proba([r.text for r in train])["category"].argmax(-1)
    assert oof_right < (memorised == gold).mean() - 0.05, "in fold the n-gram looks better than it is on unseen text"
    assert oof_right > 2 / len(HEADS["category"]), "out of fold it still reads the text (above chance)"


def test_ngram_probabilities_load_only_for_their_texts(tmp_path):
    probs = {h: np.full((2, len(labels)), 1 / len(labels), dtype=np.float32) for h, labels in HEADS.items()}
    path = save_ngram_probs(tmp_path / "oof.npz", ["甲", "乙"], probs, np.array([True, False]), {"folds": 4})
    loaded, available, meta = load_ngram_probs(path, ["甲", "乙"])
    assert available.tolist() == [True, False] and meta["folds"] == 4 and loaded["severity"].shape == (2, 3)
    with pytest.raises(ValueError, match="made for other texts"):
        load_ngram_probs(path, ["乙", "甲"])
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not an n-gram probabilities file"):
        load_ngram_probs(tmp_path / "junk.npz", ["甲"])
    with pytest.raises(ValueError, match="one row per text"):
        save_ngram_probs(tmp_path / "bad.npz", ["甲"], probs, np.array([True]), {})
