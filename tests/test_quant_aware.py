"""Quantization-aware training: the fake-quantized torch model computes what the static int8 ONNX graph computes,
gradients still reach the weights, and leaving the block gives back an ordinary fp32 model."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tiny_model

torch = pytest.importorskip("torch")

from training.quant_aware import WEIGHT_LEVELS, fake_quantize_weight, fake_quantized  # noqa: E402


def batch(seed: int = 0, rows: int = 6, length: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids with padding in all but the first row (XLM-R: <s>=0, <pad>=1, </s>=2)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 400, (rows, length), generator=gen)
    ids[:, 0] = 0
    mask = torch.ones_like(ids)
    for r in range(1, rows):
        cut = int(torch.randint(4, length, (1,), generator=gen))
        ids[r, cut] = 2
        ids[r, cut + 1 :] = 1
        mask[r, cut + 1 :] = 0
    ids[0, -1] = 2
    return ids, mask


def calibration(n: int = 24) -> list[list[int]]:
    """Unpadded single texts, as export calibrates on."""
    ids, mask = batch(seed=7, rows=n)
    return [row[: int(m.sum())].tolist() for row, m in zip(ids, mask, strict=True)]


def test_weights_round_to_seven_bits_per_output_channel() -> None:
    weight = torch.randn(16, 40) * torch.linspace(0.01, 3.0, 16).unsqueeze(1)
    rounded = fake_quantize_weight(weight)
    scale = weight.abs().amax(dim=1, keepdim=True) / WEIGHT_LEVELS
    levels = rounded / scale
    assert torch.allclose(levels, levels.round(), atol=1e-3), "every weight sits on its channel's int grid"
    assert int(levels.round().abs().max()) <= WEIGHT_LEVELS
    assert ((rounded - weight).abs() <= scale / 2 + 1e-6).all(), "rounding, not truncation"
    assert not torch.equal(rounded, weight)


def test_the_block_changes_the_outputs_a_little_and_leaves_an_ordinary_model_behind() -> None:
    model = tiny_model(2, seed=0).eval()
    ids, mask = batch()
    keys = list(model.state_dict())
    with torch.no_grad():
        before = model(ids, mask)
        with fake_quantized(model, calibration()):
            inside = model(ids, mask)
            assert list(model.state_dict()) == keys, "nothing is registered on the model: checkpoints keep their keys"
        after = model(ids, mask)
    for b, i, a in zip(before, inside, after, strict=True):
        assert torch.equal(b, a), "leaving the block restores the fp32 computation exactly"
        assert not torch.equal(b, i), "inside the block the encoder rounds"
        assert (b - i).abs().max() < 0.5 * b.abs().max() + 0.05, "rounding noise, not a different network"
    assert model.encoder.config._attn_implementation != "triage_int8_sim"


def test_padding_does_not_change_a_texts_scores_under_fake_quantization() -> None:
    model = tiny_model(2, seed=1).eval()
    ids, mask = batch(seed=3)
    with torch.no_grad(), fake_quantized(model, calibration()):
        padded = model(ids, mask)
        alone = model(ids[1:2, : int(mask[1].sum())], mask[1:2, : int(mask[1].sum())])
    for p, a in zip(padded, alone, strict=True):
        assert torch.allclose(p[1], a[0], atol=1e-4), "ranges are fixed, so a batch-mate's padding cannot move them"


def test_gradients_reach_every_encoder_weight_through_the_rounding() -> None:
    model = tiny_model(2, seed=2)
    ids, mask = batch()
    with fake_quantized(model, calibration()):
        model.train()
        sum(o.square().sum() for o in model(ids, mask)).backward()
    for name, param in model.encoder.named_parameters():
        if "layer." in name and name.endswith("weight") and param.dim() == 2:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_the_fake_quantized_model_tracks_the_static_int8_graph_far_better_than_fp32(tmp_path) -> None:
    """The point of the module: ORT's static int8 scores are what torch computes inside the block, not what it
    computes outside it. Margins, not exact figures: AVX2 and VNNI kernels round a little differently."""
    import onnxruntime as ort

    from training.export import OUTPUT_NAMES_WITH_TRIGGERS, export_onnx, quantize_int8

    model = tiny_model(2, seed=4).eval()
    # Scale the weights up so int8 rounding is well above float noise in this tiny random network.
    with torch.no_grad():
        for p in model.encoder.encoder.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    export_onnx(model, tmp_path / "model.onnx")
    cal = calibration()
    feeds = [{"input_ids": np.array([x], dtype=np.int64), "attention_mask": np.ones((1, len(x)), dtype=np.int64)} for x in cal]
    quantize_int8(tmp_path / "model.onnx", tmp_path / "model.int8.onnx", "static", feeds)
    ids, mask = batch(seed=11, rows=16)
    session = ort.InferenceSession(str(tmp_path / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    int8 = session.run(OUTPUT_NAMES_WITH_TRIGGERS, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        fp32 = [o.numpy() for o in model(ids, mask)]
        with fake_quantized(model, cal):
            simulated = [o.numpy() for o in model(ids, mask)]
    gap_fp32 = np.mean([np.abs(a - b).mean() for a, b in zip(fp32, int8, strict=True)])
    gap_simulated = np.mean([np.abs(a - b).mean() for a, b in zip(simulated, int8, strict=True)])
    assert gap_fp32 > 1e-3, "the int8 graph differs from fp32 at all (else the comparison says nothing)"
    assert gap_simulated < 0.5 * gap_fp32, (gap_simulated, gap_fp32)
