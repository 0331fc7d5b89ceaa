"""Token access, condensation policies on hand-built tokens, TCA's reservoir and logits, the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import adaptkit as ak
from adaptkit.cli import app
from adaptkit.tta import TCA, EViT, TCACondense, ToMe, flops_per_image, make_policy, vit_forward


def test_no_reduction_equals_encode_image(tiny):
    pixels = torch.randn(4, 3, 32, 32)
    trace = vit_forward(tiny, pixels)
    torch.testing.assert_close(trace.features, tiny.encode_images(pixels), atol=1e-5, rtol=0)
    assert trace.cls_tokens.shape == (4, 6, 64) and trace.token_counts == [65] * 6
    assert trace.cls_attention[0].shape == (4, 2, 64)
    torch.testing.assert_close(trace.cls_attention[0].sum(dim=-1) <= 1.0, torch.ones(4, 2, dtype=torch.bool))


@pytest.mark.parametrize("name", ["evit", "tome", "tca"])
def test_token_counts_follow_the_schedule_and_flops_fall(tiny, name):
    pixels = torch.randn(2, 3, 32, 32)
    flops = []
    for keep in (1.0, 0.9, 0.75):
        policy = make_policy(name, keep, (1, 3))
        counts = vit_forward(tiny, pixels, policy).token_counts
        expected, n = [], 65
        for block in range(6):
            expected.append(n)
            if block in (1, 3) and keep < 1.0:
                if name == "tca":
                    left = math.ceil(keep * (n - 1))
                    m = n - left
                    top = max(0, left - 2 * m)
                    middle = min(2 * m, n - 1 - top)
                    n = 1 + top + min(4, middle) + (1 if n - 1 - top - middle else 0)
                else:
                    n = 1 + math.ceil(keep * (n - 1)) + (1 if name == "evit" else 0)
        assert counts == expected, (keep, counts, expected)
        flops.append(flops_per_image(tiny, policy))
    assert flops[0] > flops[1] > flops[2]


def test_tca_schedule_on_a_vit_b16_matches_the_paper():
    backbone = ak.Backbone("ViT-B-16", device="cpu")
    counts = vit_forward(backbone, torch.zeros(1, 3, 224, 224), make_policy("tca", 0.9, (3, 6, 9))).token_counts
    assert counts[3:5] == [197, 143] and counts[6:8] == [143, 104] and counts[9:11] == [104, 77]


def hand_tokens():
    """<cls> + 6 patch tokens in 3-D, and a 2-head <cls> attention over the 6 patches."""
    x = torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.8, 0.2],
                       [0.5, 0.5, 0.0], [0.0, 0.1, 0.9]]])
    attention = torch.tensor([[[0.30, 0.05, 0.20, 0.10, 0.25, 0.10], [0.30, 0.05, 0.20, 0.10, 0.25, 0.10]]])
    return x, torch.ones(1, 7), attention


def test_evit_keeps_top_attention_and_fuses_the_rest():
    x, sizes, attention = hand_tokens()
    out, out_sizes = EViT(keep=0.5, layers=(0,))(0, x, sizes, attention)
    kept = [0, 2, 4]  # patches with attention 0.30, 0.20, 0.25, in original order
    torch.testing.assert_close(out[0, 1:4], x[0, 1:][kept])
    rest, w = x[0, 1:][[1, 3, 5]], torch.tensor([0.05, 0.10, 0.10])
    torch.testing.assert_close(out[0, 4], (w[:, None] * rest).sum(0) / w.sum())
    assert out_sizes.tolist() == [[1, 1, 1, 1, 3]]


def test_tome_merges_the_most_similar_pairs_and_preserves_size_weighted_means():
    x, _, attention = hand_tokens()
    sizes = torch.tensor([[1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0]])
    out, out_sizes = ToMe(keep=0.6, layers=(0,))(0, x, sizes, attention)
    # A = patches 0, 2, 4; B = patches 1, 3, 5. Most similar edges: 0->1 (cos .99), 2->3 (cos .97).
    assert out.shape[1] == 1 + 4 and out_sizes.sum() == sizes.sum()
    torch.testing.assert_close((out * out_sizes[..., None]).sum(1), (x * sizes[..., None]).sum(1))
    merged = (2.0 * x[0, 1] + 1.0 * x[0, 2]) / 3.0
    assert any(torch.allclose(token, merged) for token in out[0])


def test_tca_pruning_consensus_versus_mean():
    attention = torch.tensor([[[0.10, 0.00, 0.30, 0.25, 0.20, 0.15],
                               [0.10, 0.15, 0.11, 0.12, 0.13, 0.14]]])
    # patch 0 is low in both heads; patch 1 is lowest in head 0 but highest in head 1.
    mean_scores = TCACondense(ranking="mean").scores(attention)
    consensus = TCACondense(ranking="consensus").scores(attention)
    assert int(mean_scores.argmin()) == 1
    assert int(consensus.argmin()) == 0
    x = torch.randn(1, 7, 8)
    out, _ = TCACondense(keep=0.95, layers=(0,), ranking="consensus")(0, x, torch.ones(1, 7), attention)
    # left = ceil(.95 * 6) = 6, m = 1: the 4 best-ranked patches pass through unchanged, in order
    top = sorted(torch.argsort(consensus[0], descending=True)[:4].tolist())
    assert 1 in top and 0 not in top
    torch.testing.assert_close(out[0, 1:5], x[0, 1:][top])
    out_mean, _ = TCACondense(keep=0.95, layers=(0,), ranking="mean")(0, x, torch.ones(1, 7), attention)
    assert not any(torch.equal(x[0, 2], t) for t in out_mean[0, 1:5])


def reservoir_reference(items, capacity, weights):
    """Append, then drop the argmax of entropy + mean depth-weighted similarity to the others."""
    kept = []
    for item in items:
        kept.append(item)
        if len(kept) > capacity:
            scores = []
            for j, a in enumerate(kept):
                sims = [sum(w * float(F.cosine_similarity(a["cls"][layer], b["cls"][layer], dim=0))
                            for layer, w in enumerate(weights)) for k, b in enumerate(kept) if k != j]
                scores.append(a["entropy"] + np.mean(sims))
            kept.pop(int(np.argmax(scores)))
    return kept


def test_reservoir_eviction_and_logits_match_reference(tiny):
    T = torch.eye(10, 64)
    tca = TCA(tiny, T, reservoir_size=2, condense=None, lam=1.5, beta=4.0, scale=0.5)
    rng = torch.Generator().manual_seed(0)
    items = [{"feature": F.normalize(torch.randn(64, generator=rng), dim=0), "entropy": e,
              "cls": torch.randn(6, 64, generator=rng)} for e in (0.5, 0.1, 0.3, 0.2)]
    for item in items:
        tca._update(3, item)
    weights = np.exp(np.linspace(0, 1, 6) / 0.5)
    weights /= weights.sum()
    expected = reservoir_reference(items, 2, weights)
    assert [it["entropy"] for it in tca.reservoir[3]] == [it["entropy"] for it in expected]

    pixels = torch.randn(1, 3, 32, 32)
    trace = vit_forward(tiny, pixels)
    logits = tca.update_predict(pixels)[0]
    zero_shot = 100 * trace.features[0] @ F.normalize(T, dim=-1).T
    expected_logits = zero_shot.clone()
    for c, stored in enumerate(tca.reservoir):
        for it in stored:
            a = sum(w * float(F.cosine_similarity(trace.cls_tokens[0, layer], it["cls"][layer], dim=0))
                    for layer, w in enumerate(weights))
            expected_logits[c] += 1.5 * math.exp(-4.0 * (1 - a))
    torch.testing.assert_close(logits, expected_logits, atol=1e-4, rtol=1e-5)


def test_anchors_appear_once_every_class_has_two_items_and_state_round_trips(tiny, tmp_path):
    T = F.normalize(torch.randn(2, 64), dim=-1)
    tca = TCA(tiny, T, reservoir_size=3)
    rng = torch.Generator().manual_seed(1)
    for c, n in ((0, 2), (1, 1)):
        for _ in range(n):
            tca._update(c, {"feature": torch.zeros(64), "entropy": 0.1, "cls": torch.randn(6, 64, generator=rng)})
    assert tca.anchors is None
    tca._update(1, {"feature": torch.zeros(64), "entropy": 0.2, "cls": torch.randn(6, 64, generator=rng)})
    assert tca.anchors.shape == (2, 6, 64)
    torch.testing.assert_close(tca.anchors[1], torch.stack([it["cls"] for it in tca.reservoir[1]]).mean(0))
    anchored = vit_forward(tiny, torch.randn(2, 3, 32, 32), tca.policy, anchors=tca._anchor)
    assert anchored.token_counts[1] == 65
    tca.save(tmp_path / "tca.safetensors")
    other = TCA.from_file(tmp_path / "tca.safetensors", backbone=tiny)
    torch.testing.assert_close(other.anchors, tca.anchors)
    pixels = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(other.update_predict(pixels), tca.update_predict(pixels))


def test_tca_state_is_a_value_validated_and_rebuilt_from_its_file(tiny, tmp_path):
    T = F.normalize(torch.randn(3, 64), dim=-1)
    a = TCA(tiny, T, reservoir_size=2, keep=0.8)
    a.update_predict(torch.randn(6, 3, 32, 32))
    snapshot = a.state_dict()
    b = TCA(tiny, T, reservoir_size=2, keep=0.8)
    b.load_state_dict(a.state_dict())
    b.update_predict(torch.randn(5, 3, 32, 32))
    assert all(torch.equal(snapshot[k], a.state_dict()[k]) for k in snapshot)
    broken = a.state_dict()
    broken["cls"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"TCA state\['cls'\] holds NaN"):
        b.load_state_dict(broken)
    wide = a.state_dict()
    wide["features"] = wide["features"].double()
    with pytest.raises(ValueError, match=r"state\['features'\] must be float32"):
        b.load_state_dict(wide)
    path = tmp_path / "tca.safetensors"
    a.save(path)
    rebuilt = TCA.from_file(path, device="cpu")
    assert rebuilt.policy.keep == 0.8 and rebuilt.reservoir_size == 2
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt.update_predict(pixels), a.update_predict(pixels))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="tca.safetensors is not a TCA state file adaptkit can trust"):
        TCA.from_file(path, device="cpu")


def test_tca_checks_its_images_and_parameters(tiny):
    T = F.normalize(torch.randn(3, 64), dim=-1)
    tca = TCA(tiny, T)
    with pytest.raises(ValueError, match="finite float pixels"):
        tca.update_predict(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match=r"must have shape \(N, 3, 32, 32\)"):
        tca.update_predict(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="images is empty"):
        tca.update_predict([])
    with pytest.raises(ValueError, match="images is empty"):
        tca.update_predict(torch.randn(0, 3, 32, 32))
    assert all(not it for it in tca.reservoir)
    for kwargs, match in [({"keep": 0.0}, "'keep' parameter of TCA"), ({"condense": "pool"}, "'condense'"),
                          ({"reservoir_size": True}, "'reservoir_size'"), ({"scale": 0.0}, "'scale'")]:
        with pytest.raises(ValueError, match=match):
            TCA(tiny, T, **kwargs)
    with pytest.raises(ValueError, match="at least two classes"):
        TCA(tiny, T[:1])


def test_non_vit_backbone_is_refused():
    backbone = ak.Backbone("RN50", device="cpu")
    with pytest.raises(ValueError, match="token condensation needs a ViT image tower; RN50 has ModifiedResNet"):
        TCA(backbone, torch.randn(3, 1024))


def test_cli_tta_runs_both_methods(tmp_path):
    runner = CliRunner()
    for method in ("tda", "tca"):
        result = runner.invoke(app, ["tta", "digits", "--method", method, "--limit", "60",
                                     "--cache-dir", str(tmp_path), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert "accuracy" in result.output and "zero-shot" in result.output
    assert "GFLOPs per image" in result.output


def test_untested_open_clip_releases_are_refused_clearly():
    from adaptkit.tta.tokens import check_open_clip

    check_open_clip("2.24.0")
    check_open_clip("3.3.0")
    for version in ("2.23.0", "3.4.0", "4.0.1"):
        with pytest.raises(ValueError, match=f"tested with open_clip 2.24 to 3.4 .*this is open_clip {version}"):
            check_open_clip(version)
