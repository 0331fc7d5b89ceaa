"""ComCLIP (Jiang et al., NAACL 2024): training-free compositional image-text matching.

For an image and a caption parsed into (subject, predicate, object), the subject and object
sub-images are the candidate regions (from a proposer) that CLIP matches best to the subject and
object phrases; the predicate sub-image is their union box. Each sub-image is the full image with
everything outside the box blacked out. With a_k the CLIP score of word k against sub-image k,
normalised by their sum (the official code; ``weighting="softmax"`` is offered), the image
embedding is v = normalise(v₀ + Σ_k a_k v_k) and the score is 100 · v · t with t the plain caption
embedding. Only the image side is composed; there are no tunable hyper-parameters. A caption with
no parsed relation, or an image with no candidate region, scores exactly as plain CLIP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .._options import WEIGHTINGS
from ..backbones import Backbone
from ..data.decode import load_image
from .parsing import Triplet, default_parser
from .regions import Box, GridProposer, masked, union


@dataclass
class Evidence:
    """Why an (image, caption) pair scored as it did."""

    text: str
    triplet: Triplet | None
    words: tuple[str, str, str] | None = None
    boxes: dict[str, Box] | None = None
    weights: tuple[float, float, float] | None = None
    score: float = 0.0


def _load_images(images) -> list[Image.Image]:
    """One image (path or PIL) or a sequence of them -> a list of RGB PIL images."""
    return [load_image(im) for im in ([images] if isinstance(images, (str, Image.Image)) else images)]


class ComCLIP:
    """Compositional scoring on top of a frozen backbone.

    Parameters
    ----------
    backbone : an :class:`adaptkit.Backbone`.
    parser : ``text -> list[Triplet]``; default :func:`adaptkit.compose.default_parser`.
    proposer : ``PIL image -> list of boxes``; default :class:`GridProposer`.
    weighting : ``"sum"`` (official: scores divided by their sum) or ``"softmax"``.
    prompt : template for encoding the subject / predicate / object words.
    batch_size : sub-images per forward pass.
    """

    def __init__(self, backbone: Backbone, parser: Callable[[str], list[Triplet]] | None = None,
                 proposer: Callable[[Image.Image], list[Box]] | None = None, weighting: str = "sum",
                 prompt: str = "a photo of {}.", batch_size: int = 64):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be 'sum' (official) or 'softmax'; got {weighting!r}")
        self.backbone, self.parser = backbone, parser or default_parser()
        self.proposer, self.weighting, self.prompt, self.batch_size = proposer or GridProposer(), weighting, prompt, \
            batch_size
        self._text_cache: dict[str, torch.Tensor] = {}

    def _texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) embeddings, each string encoded once per ComCLIP instance."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            self._text_cache.update(zip(missing, self.backbone.encode_texts(missing)))
        return torch.stack([self._text_cache[t] for t in texts])

    def _weights(self, scores: torch.Tensor) -> torch.Tensor:
        if self.weighting == "softmax":
            return torch.softmax(scores, dim=0)
        positive = scores.clamp_min(0.0)
        total = positive.sum()
        return positive / total if total > 0 else torch.zeros_like(positive)

    def score(self, images, texts: Sequence[str], return_evidence: bool = False):
        """(N_img, N_txt) scores (100 · cosine) for images (paths or PIL) and captions; with
        ``return_evidence`` also an N_img × N_txt list of :class:`Evidence`."""
        if isinstance(texts, str):
            texts = [texts]
        images = _load_images(images)
        captions = self._texts(texts)
        triplets = [next(iter(self.parser(t)), None) for t in texts]
        words = [t.words() if t else None for t in triplets]
        vocabulary = sorted({w for ws in words if ws for w in ws})
        word_embeddings = dict(zip(vocabulary, self._texts([self.prompt.format(w) for w in vocabulary]))) \
            if vocabulary else {}
        evidence = [[None] * len(texts) for _ in images]
        global_embeddings = self.backbone.encode_images(images, self.batch_size)
        scores = (100.0 * global_embeddings @ captions.T).numpy()
        for i, image in enumerate(images):
            boxes = self.proposer(image)
            global_embedding = global_embeddings[i]
            regions = self.backbone.encode_images([masked(image, b) for b in boxes], self.batch_size) if boxes else None
            picks = {}
            for j, ws in enumerate(words):
                if ws is None or regions is None:
                    continue
                subject = int((regions @ word_embeddings[ws[0]]).argmax())
                object_scores = regions @ word_embeddings[ws[2]]
                if len(boxes) > 1:
                    object_scores[subject] = -torch.inf
                picks[j] = (boxes[subject], boxes[int(object_scores.argmax())])
            unions = list(dict.fromkeys(union(s, o) for s, o in picks.values()))
            union_embeddings = dict(zip(unions, self.backbone.encode_images(
                [masked(image, b) for b in unions], self.batch_size))) if unions else {}
            box_embedding = {b: e for b, e in zip(boxes, regions)} if regions is not None else {}
            for j, text in enumerate(texts):
                ev = Evidence(text, triplets[j])
                if j in picks:
                    subject_box, object_box = picks[j]
                    predicate_box = union(subject_box, object_box)
                    parts = torch.stack([box_embedding[subject_box], union_embeddings[predicate_box],
                                         box_embedding[object_box]])
                    word_stack = torch.stack([word_embeddings[w] for w in words[j]])
                    weights = self._weights(100.0 * (parts * word_stack).sum(dim=1))
                    embedding = F.normalize(global_embedding + (weights[:, None] * parts).sum(dim=0), dim=-1)
                    ev = Evidence(text, triplets[j], words[j], {"subject": subject_box, "predicate": predicate_box,
                                                                "object": object_box}, tuple(weights.tolist()))
                    scores[i, j] = 100.0 * float(embedding @ captions[j])
                ev.score = float(scores[i, j])
                evidence[i][j] = ev
        return (scores, evidence) if return_evidence else scores

    def clip_score(self, images, texts: Sequence[str]) -> np.ndarray:
        """Plain CLIP scores (100 · cosine), the baseline."""
        images = _load_images(images)
        return (100.0 * self.backbone.encode_images(images, self.batch_size) @ self._texts(list(texts)).T).numpy()


def plot_evidence(image, evidence: Evidence):
    """A matplotlib figure of the image with the subject, predicate and object boxes drawn."""
    import matplotlib.pyplot as plt  # deferred: plotting is optional and pyplot is slow to import
    from matplotlib.patches import Rectangle

    image = load_image(image)
    figure, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image)
    colours = {"subject": "tab:red", "predicate": "tab:green", "object": "tab:blue"}
    for (role, box), word, weight in zip((evidence.boxes or {}).items(), evidence.words or (), evidence.weights or ()):
        x0, y0, x1, y1 = box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, color=colours[role]))
        ax.text(x0, y0, f"{role}: {word} ({weight:.2f})", color=colours[role], fontsize=7, va="bottom")
    ax.set_title(f"{evidence.text} — {evidence.score:.2f}", fontsize=8)
    ax.axis("off")
    return figure
