"""The Hugging Face Hub as adaptkit meets it: is it reachable, what its cache holds, and what to
do offline (the message every failed download carries)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Sequence

from huggingface_hub import constants, try_to_load_from_cache

HUB_HOST = "huggingface.co"
CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class WeightsUnavailableError(ValueError):
    """Pretrained weights could not be loaded (not cached and no network, or a failed download)."""


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is unreachable: ``HF_HUB_OFFLINE`` set, or no connection to
    its host within two seconds."""
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return True
    try:
        socket.create_connection((HUB_HOST, 443), timeout=2).close()
    except OSError:
        return True
    return False


def hub_cached(repo: str, filenames: Sequence[str], cache_dir: str | None) -> str | None:
    """The local path of the first of ``filenames`` of hub ``repo`` found in the cache, if any."""
    for filename in filenames:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """huggingface_hub in offline mode (cache only, no retries) for the duration."""
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def how_to_pass(name: str) -> str:
    """What to do offline: the weights file as pretrained for an architecture name; for a hub name
    (which takes no pretrained file) the downloaded folder as local-dir:."""
    if name.startswith("hf-hub:"):
        repo = name[len("hf-hub:"):]
        return (f"Download the checkpoint where there is internet (hf download {repo} --local-dir <folder>, "
                "huggingface_hub >= 1.0; huggingface-cli download before), then use the folder, which holds "
                "open_clip_config.json and the weights, as name='local-dir:<folder>'.")
    return (f"Download the weights where there is internet (open_clip.create_model_and_transforms({name!r}, "
            "pretrained=<tag>) caches them), then pass the weights file as pretrained (CLI: --pretrained FILE).")
