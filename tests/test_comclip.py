"""ComCLIP scoring: the weighting formula, the plain-CLIP fallback, benchmarks, CLI, synthetic images."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from adaptkit.cli import app
from adaptkit.compose import ComCLIP, GridProposer, RuleParser, Triplet, masked, plot_evidence, union, winoground_scores
from adaptkit.compose.evaluation import pairwise_accuracy


def shapes_image(left: str, right: str, size: int = 64) -> Image.Image:
    """A coloured square on the left and a coloured circle on the right."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([4, 20, 28, 44], fill=left)
    draw.ellipse([36, 20, 60, 44], fill=right)
    return image


class FixedParser:
    def __call__(self, text):
        return [Triplet("square", "left of", "circle", "red square", "blue circle")]


def test_weighting_formula_matches_slow_reference(tiny):
    image = shapes_image("red", "blue")
    boxes = [(0, 0, 32, 64), (32, 0, 64, 64), (0, 0, 64, 32)]
    comclip = ComCLIP(tiny, parser=FixedParser(), proposer=lambda im: boxes, weighting="softmax")
    scores, evidence = comclip.score([image], ["a red square left of a blue circle"], return_evidence=True)

    encode = lambda ims: tiny.encode_images(ims)  # noqa: E731
    words = ["red square", "left of", "blue circle"]
    w = F.normalize(tiny.encode_texts([f"a photo of {x}." for x in words]), dim=-1)
    regions = encode([masked(image, b) for b in boxes])
    subject = int(np.argmax([float(r @ w[0]) for r in regions]))
    object_scores = [float(r @ w[2]) if k != subject else -np.inf for k, r in enumerate(regions)]
    obj = int(np.argmax(object_scores))
    predicate = encode([masked(image, union(boxes[subject], boxes[obj]))])[0]
    parts = [regions[subject], predicate, regions[obj]]
    raw = [100 * float(p @ wk) for p, wk in zip(parts, w)]
    weights = np.exp(raw - np.max(raw)) / np.exp(raw - np.max(raw)).sum()
    v = encode([image])[0] + sum(float(a) * p for a, p in zip(weights, parts))
    v = v / v.norm()
    expected = 100 * float(v @ tiny.encode_texts(["a red square left of a blue circle"])[0])
    assert scores[0, 0] == pytest.approx(expected, rel=1e-5, abs=1e-4)
    assert evidence[0][0].boxes["predicate"] == union(boxes[subject], boxes[obj])
    np.testing.assert_allclose(evidence[0][0].weights, weights, rtol=1e-4)


def test_sum_weighting_divides_by_the_sum():
    comclip = ComCLIP.__new__(ComCLIP)
    comclip.weighting = "sum"
    weights = comclip._weights(torch.tensor([20.0, 30.0, 50.0]))
    torch.testing.assert_close(weights, torch.tensor([0.2, 0.3, 0.5]))
    torch.testing.assert_close(comclip._weights(torch.tensor([-1.0, -2.0, 0.0])), torch.zeros(3))


def test_without_sub_images_scores_equal_plain_clip(tiny):
    images = [shapes_image("red", "blue"), shapes_image("green", "yellow")]
    texts = ["a red square to the left of a blue circle", "a sunny day"]
    plain = ComCLIP(tiny, parser=RuleParser(), proposer=lambda im: []).clip_score(images, texts)
    no_regions = ComCLIP(tiny, parser=RuleParser(), proposer=lambda im: []).score(images, texts)
    no_relation = ComCLIP(tiny, parser=lambda t: []).score(images, texts)
    np.testing.assert_array_equal(no_regions, plain)
    np.testing.assert_array_equal(no_relation, plain)


def test_pipeline_runs_on_synthetic_compositional_images(tiny, tmp_path):
    images = [shapes_image("red", "blue"), shapes_image("blue", "red")]
    texts = ["a red square to the left of a blue circle", "a blue square to the left of a red circle"]
    comclip = ComCLIP(tiny, parser=RuleParser())
    scores, evidence = comclip.score(images, texts, return_evidence=True)
    assert scores.shape == (2, 2) and np.isfinite(scores).all()
    ev = evidence[0][0]
    assert ev.words == ("red square", "to the left of", "blue circle")
    assert set(ev.boxes) == {"subject", "predicate", "object"}
    assert ev.boxes["predicate"] == union(ev.boxes["subject"], ev.boxes["object"])
    figure = plot_evidence(images[0], ev)
    figure.savefig(tmp_path / "evidence.png")
    assert (tmp_path / "evidence.png").stat().st_size > 0
    assert len(GridProposer()(images[0])) == 2 + 2 + 4 + 9


def test_masked_blacks_out_everything_outside_the_box():
    image = Image.new("RGB", (10, 10), (200, 100, 50))
    out = np.asarray(masked(image, (2, 3, 6, 8)))
    assert (out[3:8, 2:6] == (200, 100, 50)).all() and out.sum() == 5 * 4 * 350


def test_winoground_metrics_on_hand_made_tables():
    both = [[10, 1], [2, 9]]          # [caption][image]: each caption prefers its image and vice versa
    narrow = [[5, 4], [1, 6]]         # both hold, by small margins
    image_fail = [[5, 6], [1, 7]]     # caption 0 prefers image 1 -> image score fails, text score holds
    all_fail = [[1, 5], [5, 1]]
    result = winoground_scores(np.array([both, narrow, image_fail, all_fail]))
    assert result == {"text": 0.75, "image": 0.5, "group": 0.5}
    assert pairwise_accuracy([3, 1, 2], [1, 2, 2]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"shape \(M, 2, 2\)"):
        winoground_scores(np.zeros((3, 2)))


def test_cli_compose_eval_counts_failures(tmp_path):
    shapes_image("red", "blue").save(tmp_path / "rb.png")
    shapes_image("blue", "red").save(tmp_path / "br.png")
    with (tmp_path / "pairs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "positive", "negative"])
        writer.writerow(["rb.png", "a red square left of a blue circle", "a blue square left of a red circle"])
        writer.writerow(["br.png", "a blue square left of a red circle", "a red square left of a blue circle"])
        writer.writerow(["missing.png", "a cat on a mat", "a mat on a cat"])
    result = CliRunner().invoke(app, ["compose", "eval", "--csv", str(tmp_path / "pairs.csv"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "| method | accuracy |" in result.output and "| comclip |" in result.output
    assert "1 rows failed and count as wrong" in result.output and "missing.png" in result.output
    with (tmp_path / "wino.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_0", "image_1", "caption_0", "caption_1"])
        writer.writerow(["rb.png", "br.png", "a red square left of a blue circle", "a blue square left of a red circle"])
    result = CliRunner().invoke(app, ["compose", "eval", "--csv", str(tmp_path / "wino.csv"), "--device", "cpu"])
    assert result.exit_code == 0 and "| method | text | image | group |" in result.output
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    bad = CliRunner().invoke(app, ["compose", "eval", "--csv", str(tmp_path / "bad.csv")])
    assert bad.exit_code != 0 and "header must be" in bad.output
