"""Frozen open_clip backbones: model + preprocessing + tokenizer behind one small API.

``Backbone`` turns images and prompts into L2-normalised float32 features. It never trains:
parameters are frozen and every forward runs under ``torch.inference_mode``.

Names are anything open_clip accepts: a built-in architecture (``"ViT-B-16"``, ``"RN50"``,
``"adaptkit-tiny"``) with ``pretrained`` a tag or a weights file, ``"hf-hub:org/repo"`` (config,
preprocessing, tokenizer and weights from the Hugging Face Hub) or ``"local-dir:/path"`` (a folder
with ``open_clip_config.json`` and weights: a downloaded hub checkpoint, usable offline). The
backbone's ``identity`` names the weights by content (SHA-256 of the checkpoint file, or the
random-init seed), so feature caches and adapter files never mix two checkpoints.

Without network (no route to the Hub, or ``HF_HUB_OFFLINE=1``) a download fails in seconds with
:class:`WeightsUnavailableError`, which says how to pass a downloaded file or folder instead.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.pretrained import download_pretrained_from_hf
from torchvision import transforms as T

from ._options import PRECISIONS
from ._params import DEVICE, StrOptions, check_params
from ._validation import resolve_device
from .data.decode import load_image
from .hub import CHECKPOINT_NAMES, WeightsUnavailableError, how_to_pass, hub_cached, hub_offline, offline_hub
from .storage import expand_path, file_sha256
from .text import prompts

logger = logging.getLogger("adaptkit")

_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(_CONFIG_DIR)

TINY = "adaptkit-tiny"
"""A randomly initialised ViT at 32 px (~200k vision parameters) for tests and the offline demo."""

def list_backbones(pretrained: bool = False) -> list[str] | dict[str, list[str]]:
    """Architectures :class:`Backbone` accepts by name (every open_clip architecture plus
    ``adaptkit-tiny``); with ``pretrained=True``, {architecture: [pretrained tags]}. ``hf-hub:``
    and ``local-dir:`` names are accepted too."""
    names = open_clip.list_models()
    if not pretrained:
        return names
    return {name: open_clip.list_pretrained_tags_by_model(name) for name in names}


class _OpenClipRecords(logging.Filter):
    """Reroutes open_clip's root-logger records through the ``adaptkit`` logger: INFO dropped,
    the expected "initialized randomly" warning of a random init dropped, the rest re-emitted."""

    def __init__(self, random_init: bool):
        super().__init__()
        self.random_init = random_init

    def filter(self, record: logging.LogRecord) -> bool:
        if "open_clip" not in record.pathname.replace("\\", "/"):
            return True
        message = record.getMessage()
        expected = self.random_init and "initialized randomly" in message
        if record.levelno >= logging.WARNING and not expected and record.levelno < logging.ERROR:
            logger.log(record.levelno, "open_clip: %s", message)
        return False


@contextlib.contextmanager
def open_clip_logging(random_init: bool = False) -> Iterator[None]:
    """Keep open_clip's module-level ``logging.warning`` calls from installing a root handler
    (which would then print every later library warning as ``WARNING:name:...``)."""
    root = logging.getLogger()
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder:
        root.addHandler(placeholder)
    records = _OpenClipRecords(random_init)
    root.addFilter(records)
    try:
        yield
    finally:
        root.removeFilter(records)
        if placeholder:
            root.removeHandler(placeholder)


def local_checkpoint(folder: Path) -> Path | None:
    """The weights file open_clip loads from a ``local-dir:`` folder (its own choice among the
    folder's checkpoints: a ``.safetensors`` file before a ``.bin`` one), or ``None``."""
    try:
        from open_clip.factory import _find_checkpoint_in_dir  # open_clip's own rule, when it has one
    except ImportError:
        found = next((folder / name for name in CHECKPOINT_NAMES if (folder / name).is_file()), None)
    else:
        found = _find_checkpoint_in_dir(folder)
    return None if found is None else Path(found)


class Backbone:
    """A frozen open_clip model with its preprocessing and tokenizer.

    Parameters
    ----------
    name : an open_clip architecture (``"ViT-B-16"``, ``"RN50"``, ``"adaptkit-tiny"``; ``/``
        may stand for ``-``), ``"hf-hub:org/repo"`` or ``"local-dir:/path/to/folder"``.
    pretrained : for an architecture: an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``,
        ...), a path to a weights file, or ``None`` for a random initialisation seeded by
        ``init_seed``. Must be ``None`` for ``hf-hub:`` and ``local-dir:`` names.
    device : ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
    precision : ``"auto"`` (fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``, ``"amp"`` (fp16
        autocast) or ``"amp_bf16"``. Weights stay fp32; outputs are always float32.
    cache_dir : where open_clip stores downloaded weights (its default when ``None``).
    init_seed : seed of the random initialisation when there are no weights.

    Attributes: ``model``, ``preprocess`` (a torchvision transform of PIL images), ``tokenizer``,
    ``image_size``, ``mean``/``std``, ``identity`` (what determines the features),
    ``logit_scale``/``logit_bias`` (the model's own zero-shot calibration: see
    :meth:`model_logits`).
    """

    _parameter_constraints = {"device": [DEVICE], "precision": [StrOptions(set(PRECISIONS))],
                              "init_seed": [int], "cache_dir": [str, os.PathLike, None],
                              "pretrained": [str, os.PathLike, None]}

    def __init__(self, name: str, pretrained: str | os.PathLike | None = None, *, device: str = "auto",
                 precision: str = "auto", cache_dir: str | os.PathLike | None = None, init_seed: int = 0):
        check_params("Backbone", self._parameter_constraints,
                     {"device": device, "precision": precision, "init_seed": init_seed, "cache_dir": cache_dir,
                      "pretrained": pretrained})
        self.name, schema, target = self._resolve_name(name)
        self.device = resolve_device(device)
        self.precision = ("amp" if self.device.type == "cuda" else "fp32") if precision == "auto" else precision
        self.pretrained = None if pretrained is None else os.fspath(pretrained)
        self.init_seed, self.cache_dir = init_seed, None if cache_dir is None else os.fspath(cache_dir)
        self._offline = False
        weights, self.weights_id = self._resolve_weights(schema, target, pretrained)
        self.model_id = self.name if schema != "local-dir" else \
            f"local-dir:config-sha256:{file_sha256(Path(target) / 'open_clip_config.json')[:16]}"
        with torch.random.fork_rng(devices=[]), open_clip_logging(random_init=self.weights_id.startswith("random")):
            torch.manual_seed(init_seed)
            model, _, preprocess = self._create(weights)
            offline = offline_hub() if self._offline else contextlib.nullcontext()
            with offline:
                self.tokenizer = open_clip.get_tokenizer(self.name, cache_dir=self.cache_dir)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.preprocess = preprocess
        self._embed_dim: int | None = None
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        size = cfg["size"]
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.preprocess_cfg = dict(cfg)

    # --- resolving names and weights ----------------------------------------------------------

    @staticmethod
    def _resolve_name(name) -> tuple[str, str | None, str | None]:
        """(the name open_clip gets, its schema, the hub repo or folder)."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a string such as 'ViT-B-16'; got {type(name).__name__}")
        if name.startswith("hf-hub:"):
            repo = name[len("hf-hub:"):].strip()
            if repo.count("/") != 1 or not all(repo.split("/")):
                raise ValueError(f"name={name!r}: an hf-hub name is 'hf-hub:org/repo'")
            return f"hf-hub:{repo}", "hf-hub", repo
        if name.startswith("local-dir:"):
            folder = expand_path(name[len("local-dir:"):].strip()).resolve()
            if not folder.is_dir():
                raise FileNotFoundError(f"name={name!r}: the folder {folder} does not exist")
            if not (folder / "open_clip_config.json").is_file():
                raise ValueError(f"name={name!r}: {folder} has no open_clip_config.json (a local-dir: folder holds "
                                 "the config and the weights of one checkpoint)")
            return f"local-dir:{folder}", "local-dir", str(folder)
        cleaned = name.replace("/", "-")
        known = list_backbones()
        if cleaned not in known:
            close = difflib.get_close_matches(cleaned, known, n=5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"name={name!r} is not an open_clip architecture.{hint} adaptkit.list_backbones() "
                             "lists them all; hub checkpoints load as 'hf-hub:org/repo', downloaded ones as "
                             "'local-dir:/path'.")
        return cleaned, None, None

    def _resolve_weights(self, schema: str | None, target: str | None, pretrained) -> tuple[Any, str]:
        """(what to pass to open_clip as ``pretrained``, the weights' identity string)."""
        if schema is not None:
            if pretrained is not None:
                raise ValueError(f"pretrained={pretrained!r}: {schema}: names carry their own weights; leave "
                                 "pretrained unset")
            if schema == "local-dir":
                checkpoint = local_checkpoint(Path(target))
                if checkpoint is None:
                    raise WeightsUnavailableError(f"{self.name}: no weights file ({' or '.join(CHECKPOINT_NAMES)}) "
                                                  f"in {target}")
                return None, f"sha256:{file_sha256(checkpoint)}"
            return None, self._hub_weights(target)
        if pretrained is None:
            return None, f"random-init:seed={self.init_seed}:torch={torch.__version__.split('+')[0]}"
        path = expand_path(pretrained, "pretrained")
        if path.is_file():
            return str(path), f"sha256:{file_sha256(path)}"
        tags = open_clip.list_pretrained_tags_by_model(self.name)
        if str(pretrained) in tags:
            self._check_tag_reachable(str(pretrained))
            return str(pretrained), f"tag:{pretrained}"
        if isinstance(pretrained, os.PathLike) or any(s in str(pretrained) for s in ("/", "\\", ".")):
            raise ValueError(f"pretrained={str(pretrained)!r}: no such weights file. Pass an open_clip tag "
                             f"({', '.join(tags) or 'none exist for this model'}) or the path of a local checkpoint.")
        raise ValueError(f"pretrained={pretrained!r} is not a known open_clip tag for {self.name}; known tags: "
                         f"{', '.join(tags) or 'none (pass a local weights file)'}")

    def _check_tag_reachable(self, tag: str) -> None:
        """Fail in seconds when the tag's weights are neither cached nor downloadable."""
        cfg = open_clip.get_pretrained_cfg(self.name, tag)
        hub = cfg.get("hf_hub", "")
        if hub:
            parts = hub.strip("/").split("/")
            repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
            names = [filename] if filename else list(CHECKPOINT_NAMES)
            if hub_cached(repo, names, self.cache_dir):
                self._offline = hub_offline()
                return
        elif cfg.get("url"):
            cached = Path(self.cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(cfg["url"])
            if cached.is_file():
                self._offline = False
                return
        self._offline = hub_offline()
        if self._offline:
            raise WeightsUnavailableError(
                f"pretrained={tag!r}: the weights of {self.name} (tag {tag}) are not in the local cache and the "
                f"Hugging Face Hub cannot be reached (no network, or HF_HUB_OFFLINE is set). {how_to_pass(self.name)}")

    def _hub_weights(self, repo: str) -> str:
        """Identity of a hub checkpoint: the SHA-256 of its weights file (downloaded if needed)."""
        self._offline = hub_offline()
        config = hub_cached(repo, ["open_clip_config.json"], self.cache_dir)
        weights = hub_cached(repo, CHECKPOINT_NAMES, self.cache_dir)
        if self._offline and not (config and weights):
            raise WeightsUnavailableError(
                f"{self.name}: the download from the Hugging Face Hub failed: the checkpoint is not in the local "
                f"cache and the Hub cannot be reached (no network, or HF_HUB_OFFLINE is set). "
                f"{how_to_pass(self.name)}")
        if weights is None:
            try:
                with open_clip_logging():
                    weights = download_pretrained_from_hf(repo, cache_dir=self.cache_dir)
            except Exception as err:  # huggingface_hub raises many types for one cause
                raise WeightsUnavailableError(f"{self.name}: the download from the Hugging Face Hub failed ({err}). "
                                              f"{how_to_pass(self.name)}") from err
        return f"sha256:{file_sha256(weights)}"

    def _create(self, weights):
        offline = offline_hub() if self._offline else contextlib.nullcontext()
        try:
            with offline:
                return open_clip.create_model_and_transforms(self.name, pretrained=weights, cache_dir=self.cache_dir)
        except (RuntimeError, OSError) as err:
            raise WeightsUnavailableError(
                f"{self.name} (pretrained={self.pretrained!r}): loading the weights failed ({err}). "
                f"{how_to_pass(self.name)}") from err

    # --- description --------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Backbone({self.name!r}, pretrained={self.pretrained!r}, device='{self.device}')"

    @property
    def identity(self) -> dict[str, str]:
        """What determines the features: model, weights identity and numeric precision. A
        ``local-dir:`` model is named by its config's content (``local-dir:config-sha256:…``),
        not by where the folder lies, so a moved or copied checkpoint keeps its identity."""
        return {"model": self.model_id, "weights": self.weights_id, "precision": self.precision}

    @property
    def spec(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this backbone in another process (Ray workers)."""
        return {"name": self.name, "pretrained": self.pretrained, "precision": self.precision,
                "cache_dir": self.cache_dir, "init_seed": self.init_seed}

    @classmethod
    def from_identity(cls, identity: dict[str, str], pretrained: str | os.PathLike | None = None,
                      **options) -> Backbone:
        """Rebuild the backbone recorded in ``identity`` (e.g. a saved adapter's). Weights from a
        local file need that file as ``pretrained``; its content hash is checked."""
        if not isinstance(identity, dict) or not {"model", "weights"} <= set(identity):
            raise ValueError(f"identity must be a backbone identity with 'model' and 'weights'; got {identity!r}")
        kind, _, value = identity["weights"].partition(":")
        model = identity["model"]
        if model.startswith("local-dir:config-sha256:"):
            raise ValueError(f"the features came from a local-dir: checkpoint ({model}, weights {identity['weights']}), "
                             "recorded by content, not by place: pass its folder as the backbone, "
                             "Backbone('local-dir:/path/to/folder') (CLI: --backbone local-dir:/path/to/folder)")
        if model.startswith(("hf-hub:", "local-dir:")):
            backbone = cls(model, **options)
        elif kind == "tag":
            backbone = cls(model, pretrained=pretrained or value, **options)
        elif kind == "random-init":
            seed = int(value.split(":")[0].removeprefix("seed="))
            backbone = cls(model, pretrained=pretrained, init_seed=seed, **options)
        elif pretrained is None:
            raise ValueError(f"the features came from a local weights file of {model} ({identity['weights']}); "
                             "pass that file as pretrained (CLI: --pretrained FILE)")
        else:
            backbone = cls(model, pretrained=pretrained, **options)
        if backbone.weights_id != identity["weights"] and kind != "tag":
            raise ValueError(f"the weights given ({backbone.weights_id}) are not the recorded ones "
                             f"({identity['weights']}) of {model}")
        return backbone

    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint image-text embedding."""
        if self._embed_dim is None:
            self._embed_dim = int(self.encode_texts(["a"]).shape[1])
        return self._embed_dim

    @property
    def logit_scale(self) -> float:
        """The model's own zero-shot temperature (exp of its learned logit scale; CLIP's is 100)."""
        return float(self.model.logit_scale.exp())

    @property
    def logit_bias(self) -> float | None:
        """The model's own zero-shot bias (SigLIP-style models), or ``None``."""
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else float(bias)

    def model_logits(self, image_features, text_weights) -> torch.Tensor:
        """The model's own calibrated logits, scale · cos(x, t) (+ bias): (N, C).

        adaptkit's adapters do not use these: their zero-shot term is always 100 · cos(x, t) (CLIP's
        scale) whatever the model, so the published hyper-parameter grids keep their meaning. For
        CLIP models the two are equal; for SigLIP-style models (scale ≈ 10, bias ≈ −10) they rank
        classes identically and differ only in calibration."""
        x = F.normalize(torch.as_tensor(image_features, dtype=torch.float32), dim=-1)
        t = F.normalize(torch.as_tensor(text_weights, dtype=torch.float32), dim=-1)
        logits = self.logit_scale * x @ t.T
        return logits if self.logit_bias is None else logits + self.logit_bias

    def support_augmentation(self) -> T.Compose:
        """The few-shot support augmentation of the protocol at this backbone's resolution:
        RandomResizedCrop(scale=(0.5, 1), bicubic) + horizontal flip, then CLIP normalisation."""
        return T.Compose([
            T.RandomResizedCrop(self.image_size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(p=0.5),
            T.Lambda(_to_rgb),
            T.ToTensor(),
            T.Normalize(self.mean, self.std),
        ])

    # --- encoding -----------------------------------------------------------------------------

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "amp_bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def encode_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed pixels -> (B, D) L2-normalised float32 features on CPU."""
        with self._autocast():
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return F.normalize(features.float(), dim=-1).cpu()

    def encode_images(self, images: Sequence[Any] | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Encode images given as PIL images, file paths, or a preprocessed (N, 3, H, W) tensor.

        Returns (N, D) L2-normalised float32 features on CPU."""
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.image_size:
                raise ValueError(f"images as a tensor must be preprocessed pixels of shape (N, 3, "
                                 f"{self.image_size[0]}, {self.image_size[1]}) for {self.name}; got "
                                 f"{tuple(images.shape)} (pass PIL images or files to have them preprocessed)")
            batches = images.split(batch_size)
        else:
            if isinstance(images, (str, os.PathLike)) or hasattr(images, "convert"):
                images = [images]
            batches = (torch.stack([self.preprocess(load_image(im)) for im in images[i:i + batch_size]])
                       for i in range(0, len(images), batch_size))
        return torch.cat([self.encode_batch(batch) for batch in batches])

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 1024) -> torch.Tensor:
        """Encode strings into (N, D) L2-normalised float32 features on CPU."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i:i + batch_size])).to(self.device)
            with self._autocast():
                out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out)

    def text_classifier(self, classnames: Sequence[str], templates) -> torch.Tensor:
        """Zero-shot weights (C, D): per class, the renormalised mean of the normalised embeddings
        of its prompts. ``templates`` is a list of templates (``"a photo of a {}."``, or
        CLIP_benchmark's ``"a photo of a {c}."``) or a dict {class name: [prompts]} (CuPL style)."""
        per_class = prompts(classnames, templates)
        flat = [p for group in per_class for p in group]
        embeddings = F.normalize(self.encode_texts(flat), dim=-1)
        counts = torch.tensor([len(group) for group in per_class])
        owner = torch.arange(len(per_class)).repeat_interleave(counts)
        sums = torch.zeros(len(per_class), embeddings.shape[1]).index_add_(0, owner, embeddings)
        return F.normalize(sums / counts[:, None], dim=-1)


def _to_rgb(image):
    return image.convert("RGB")

