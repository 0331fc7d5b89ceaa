"""The option vocabularies of the library, in a module that imports nothing heavy: the library's
constraints and the CLI's choices are built from these same tuples."""

ENGINES = ("local", "ray")
"""Extraction engines: a torch DataLoader in this process, or a Ray Data job."""
ON_ERROR = ("raise", "skip")
"""What extraction does at an unreadable image."""
DECODERS = ("cpu", "gpu")
"""Where JPEG files are decoded."""
PRECISIONS = ("auto", "fp32", "amp", "amp_bf16")
"""Backbone numeric precision: auto (fp16 autocast on CUDA, fp32 on CPU), fp32, fp16 or bf16 autocast."""
TTA_METHODS = ("tda", "tca")
"""Test-time methods: the TDA caches, or TCA's token condensation."""
CONDENSE_POLICIES = ("evit", "tome", "tca")
"""Token condensation policies of TCA."""
WEIGHTINGS = ("sum", "softmax")
"""How ComCLIP weights its sub-image embeddings."""
SERVE_ENGINES = ("local", "ray")
"""How ``adaptkit serve`` runs: uvicorn in this process, or Ray Serve replicas."""
DATASET_NAMES = ("digits", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101", "imagenet", "imagenet_v2", "imagenet_sketch",
                 "imagenet_a", "imagenet_r", "imagefolder")
"""Every dataset name :func:`adaptkit.datasets.load` accepts (checked against the loaders by a test)."""
SPLITS = ("train", "val", "test")
"""The splits every dataset has."""
