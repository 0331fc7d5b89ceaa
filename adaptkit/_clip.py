"""CLIP's constants, shared by the adapters and the test-time methods."""

LOGIT_SCALE = 100.0
"""CLIP's logit scale: the zero-shot term of every adapter is 100 · cosine(x, t_c)."""
