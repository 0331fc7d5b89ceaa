"""Every Python block of README runs, in order, in one namespace, with these substitutions (the
only ones): the tiny random-init backbone for ViT-B-16/openai, scikit-learn's digits for
oxford_pets, and generated JPEGs for img1.jpg, img2.jpg, img.jpg and photos/. The "add your own
adapter" block is run by tests/test_extension.py, which also unregisters it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import write_jpegs

README = Path(__file__).parent.parent / "README.md"
SUBSTITUTIONS = {
    'ak.Backbone("ViT-B-16", pretrained="openai")': 'ak.Backbone(ak.TINY, device="cpu")',
    'ak.datasets.load("oxford_pets", root="~/data")': 'ak.datasets.load("digits")',
}


def readme_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    text = re.sub(r"<!-- own-adapter -->.*?<!-- /own-adapter -->", "", text, flags=re.S)
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_every_python_block_of_readme_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADAPTKIT_CACHE", str(tmp_path / "cache"))
    jpegs = write_jpegs(tmp_path / "made", n_classes=1, per_class=4, size=(48, 48))
    for name, source in zip(("img1.jpg", "img2.jpg", "img.jpg"), jpegs):
        Path(source).rename(tmp_path / name)
    (tmp_path / "photos").mkdir()
    Path(jpegs[3]).rename(tmp_path / "photos" / "p.jpg")
    blocks = readme_blocks()
    assert len(blocks) >= 4
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        for original, replacement in SUBSTITUTIONS.items():
            block = block.replace(original, replacement)
        exec(compile(block, f"README python block {number}", "exec"), namespace)
    assert namespace["board"].best is not None and len(namespace["support"]) == 160
    assert Path("pets-gda.safetensors").is_file() and Path("tda.safetensors").is_file()


def test_the_substitutions_still_match_readme():
    text = "".join(readme_blocks())
    for original in SUBSTITUTIONS:
        assert original in text, original
