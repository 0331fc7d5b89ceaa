"""ComCLIP throughput: image-caption pairs per second against plain CLIP, in the same run.

Each image is scored against a set of captions; ComCLIP encodes every candidate region of an image
in one batched forward, caches phrase embeddings, and encodes one union box per distinct
(subject, object) pick.

    python benchmarks/compose.py [--backbones adaptkit-tiny,ViT-B-32] [--images 8] [--captions 4] [--repeats 3]

Both paths are warmed up on the same images first (the first call builds kernels and caches
the captions' text features), then each is timed as the best of ``--repeats`` calls.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw
from tune import best_of

import adaptkit as ak
from adaptkit.compose import ComCLIP, RuleParser

CAPTIONS = ["a red square to the left of a blue circle", "a blue circle to the left of a red square",
            "a dog chasing a cat", "a cup on a table"]


def image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(canvas)
    for _ in range(3):
        x, y = rng.integers(0, 160, 2)
        draw.rectangle([int(x), int(y), int(x) + 60, int(y) + 60], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="adaptkit-tiny,ViT-B-32")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--captions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per path, after one warm-up call")
    args = parser.parse_args()
    images, captions = [image(i) for i in range(args.images)], CAPTIONS[:args.captions]
    print("| backbone | CLIP images/s | ComCLIP images/s | ComCLIP / CLIP time |\n|---|---|---|---|")
    for name in args.backbones.split(","):
        comclip = ComCLIP(ak.Backbone(name, device="cpu"), parser=RuleParser())
        clip_s = best_of(args.repeats, comclip.clip_score, images, captions)
        comclip_s = best_of(args.repeats, comclip.score, images, captions)
        print(f"| {name} | {len(images) / clip_s:.1f} | {len(images) / comclip_s:.2f} | {comclip_s / clip_s:.1f}x |",
              flush=True)


if __name__ == "__main__":
    main()
