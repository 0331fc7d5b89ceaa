"""Fuzz table: bad input anywhere in the API fails loudly and says which argument is wrong.

Every case must raise a ``ValueError`` or ``TypeError`` (``NotFittedError`` is a ``ValueError``)
whose message matches the case's pattern, which names the argument. Nothing may pass silently or
fail with another exception (IndexError, RuntimeError, KeyError, a torch error...).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adaptkit as ak
from adaptkit.adapters import ADAPTERS
from adaptkit.support import SupportIndex
from adaptkit.tta import TCA, TDA
from helpers import clip_like, family_inputs, fit_member

X, Y, X_TEST, Y_TEST, T = clip_like(n_classes=4, dim=16, per_class=5, n_test=20)
NAN, INF = float("nan"), float("inf")


def fitted(name: str, **params):
    return fit_member(name, X, Y, T, X_TEST, **params)


def with_nan(a, i=0):
    a = np.array(a, copy=True)
    a.flat[i] = np.nan
    return a


# (adapter, parameter, bad value): each is refused at fit, naming the parameter.
BAD_HYPERPARAMETERS = [
    ("linear_probe", "C", 0.0), ("linear_probe", "C", -1.0), ("linear_probe", "C", NAN), ("linear_probe", "C", "1"),
    ("linear_probe", "max_iter", 0), ("linear_probe", "max_iter", 2.5), ("linear_probe", "max_iter", True),
    ("gda", "alpha", NAN), ("gda", "alpha", INF), ("gda", "alpha", -1.0), ("gda", "alpha", None), ("gda", "alpha", "x"),
    ("tip_adapter", "alpha", NAN), ("tip_adapter", "beta", -0.5), ("tip_adapter", "beta", INF),
    ("tip_adapter", "top_k", True), ("tip_adapter", "top_k", 0), ("tip_adapter", "top_k", "dense"),
    ("tip_adapter", "top_k", 2.5),
    ("tip_x", "gamma", NAN), ("tip_x", "tau", 0.0), ("tip_x", "tau", -1.0), ("tip_x", "beta", "1"),
    ("tip_x", "top_k", -3),
    ("ape", "n_channels", 0), ("ape", "n_channels", 17), ("ape", "n_channels", 2.0), ("ape", "w_similarity", NAN),
    ("ape", "gamma", INF), ("ape", "beta", -1.0),
    ("proker", "beta", -1.0), ("proker", "beta", NAN), ("proker", "lam", 0.0), ("proker", "lam", -1.0),
    ("proker", "rank", 0), ("proker", "rank", 2.5), ("proker", "random_state", -1),
    ("proker", "lam", "0.1"),
    ("caption_cache", "delta", 1.5), ("caption_cache", "delta", -0.1), ("caption_cache", "tau", 0.0),
    ("caption_cache", "top_k", False),
    ("gda_transductive", "n_iter", 0), ("gda_transductive", "n_iter", -2), ("gda_transductive", "tol", NAN),
    ("gda_transductive", "alpha", INF),
    ("zero_shot", "device", "tpu"), ("gda", "device", 3),
]


@pytest.mark.parametrize("name,param,value", BAD_HYPERPARAMETERS,
                         ids=[f"{n}-{p}={v!r}" for n, p, v in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters_are_refused_at_fit(name, param, value):
    with pytest.raises((ValueError, TypeError), match=rf"\b{param}\b"):
        fitted(name, **{param: value})


def invalid_values(constraints):
    """Values that satisfy none of ``constraints``: scikit-learn's generated invalid value for each
    constraint that has one, and a plain object."""
    from sklearn.utils._param_validation import generate_invalid_param_val, make_constraint

    made = [make_constraint(c) for c in constraints]
    values = [object()]
    for constraint in made:
        try:
            values.append(generate_invalid_param_val(constraint))
        except NotImplementedError:
            continue
    return [v for v in values if not any(c.is_satisfied_by(v) for c in made)]


REGISTRY_CASES = [(cls, param, value) for cls in ADAPTERS.values() for param, constraints in
                  cls._parameter_constraints.items() for value in invalid_values(constraints)]


@pytest.mark.parametrize("cls,param,value", REGISTRY_CASES,
                         ids=[f"{c.name}-{p}={type(v).__name__}:{v!r:.12}" for c, p, v in REGISTRY_CASES])
def test_every_registered_adapter_refuses_values_outside_its_constraints(cls, param, value):
    """Over the registry, so an adapter of one's own is fuzzed too: at fit and as a grid value."""
    with pytest.raises((ValueError, TypeError), match=rf"\b{param}\b"):
        fitted(cls.name, **{param: value})
    if param != "device":
        with pytest.raises((ValueError, TypeError), match=rf"\b{param}\b"):
            ak.tune(fitted(cls.name), X_TEST, Y_TEST, {param: [value]})


@pytest.mark.parametrize("cls", list(ADAPTERS.values()), ids=lambda cls: cls.name)
def test_every_registered_adapter_names_bad_fit_data(cls):
    inputs = family_inputs(cls, X, X_TEST)
    with pytest.raises(ValueError, match=r"\bX\b"):
        cls(device="cpu").fit(with_nan(X), Y, text_weights=T, **inputs)
    with pytest.raises(ValueError, match=r"\by\b"):
        cls(device="cpu").fit(X, Y[:-1], text_weights=T, **inputs)
    with pytest.raises(TypeError, match="unexpected inputs"):
        cls(device="cpu").fit(X, Y, text_weights=T, not_an_input=1, **inputs)
    for name, spec in cls.fit_inputs.items():
        if spec.required:
            with pytest.raises(ValueError, match=rf"\b{name}\b"):
                cls(device="cpu").fit(X, Y, text_weights=T, **{k: v for k, v in inputs.items() if k != name})
    fitted_adapter = fit_member(cls, X, Y, T, X_TEST)
    with pytest.raises(ValueError, match=r"\bX\b"):
        fitted_adapter.predict(X_TEST[:, :8])
    with pytest.raises(ValueError, match=r"\by_val\b"):
        ak.tune(fitted_adapter, X_TEST, Y_TEST[:-1])


# (adapter, grid): each is refused by tune, naming the grid parameter.
BAD_GRIDS = [
    ("gda", {"alpha": [1.0, NAN]}), ("gda", {"alpha": ["1"]}), ("gda", {"alpha": []}), ("gda", {"alfa": [1.0]}),
    ("gda", {"device": ["cpu"]}), ("gda", {"alpha": np.ones((2, 2))}), ("gda", {"alpha": 1.0}),
    ("tip_adapter", {"beta": [-1.0]}), ("tip_adapter", {"top_k": [True]}), ("tip_adapter", {"alpha": [INF]}),
    ("tip_x", {"tau": [0.0]}), ("ape", {"n_channels": [0]}), ("ape", {"n_channels": [None, 99]}),
    ("proker", {"lam": [0.0]}), ("proker", {"beta": [None]}), ("linear_probe", {"C": [-1.0]}),
    ("caption_cache", {"delta": [2.0]}), ("gda_transductive", {"n_iter": [0]}),
]


@pytest.mark.parametrize("name,grid", BAD_GRIDS, ids=[f"{n}-{list(g)[0]}-{i}" for i, (n, g) in enumerate(BAD_GRIDS)])
def test_bad_grid_values_are_refused_by_tune(name, grid):
    adapter = fitted(name)
    X_val, y_val = (X_TEST, Y_TEST)
    with pytest.raises((ValueError, TypeError), match=rf"\b{list(grid)[0]}\b"):
        ak.tune(adapter, X_val, y_val, grid)


BAD_FIT_INPUTS = [
    ("1-D X", lambda: ak.GDA(device="cpu").fit(X[0], Y[:1], text_weights=T), r"\bX\b"),
    ("NaN in X", lambda: ak.GDA(device="cpu").fit(with_nan(X), Y, text_weights=T), r"\bX\b"),
    ("inf in X", lambda: ak.TipAdapter(device="cpu").fit(X * np.inf, Y, text_weights=T), r"\bX\b"),
    ("y too short", lambda: ak.GDA(device="cpu").fit(X, Y[:-1], text_weights=T), r"\by\b|samples"),
    ("float labels", lambda: ak.GDA(device="cpu").fit(X, Y + 0.5, text_weights=T), r"\by\b"),
    ("negative label", lambda: ak.TipAdapter(device="cpu").fit(X, Y - 1, text_weights=T), r"\by\b"),
    ("label beyond classes", lambda: ak.TipAdapter(device="cpu").fit(X, Y + 4, text_weights=T), r"\by\b"),
    ("text dim", lambda: ak.GDA(device="cpu").fit(X, Y, text_weights=T[:, :8]), r"text_weights"),
    ("text NaN", lambda: ak.GDA(device="cpu").fit(X, Y, text_weights=with_nan(T)), r"text_weights"),
    ("TipX without text", lambda: ak.TipX(device="cpu").fit(X, Y), r"text_weights"),
    ("string X", lambda: ak.GDA(device="cpu").fit(np.array([["a"] * 16] * 20), Y, text_weights=T), r"\bX\b"),
    ("captions length", lambda: ak.CaptionCache(device="cpu").fit(X, Y, text_weights=T, captions=["a"]),
     r"captions"),
    ("captions type", lambda: ak.CaptionCache(device="cpu").fit(X, Y, text_weights=T, captions=42), r"captions"),
    ("transductive one sample", lambda: ak.TransductiveGDA(device="cpu").fit(X, Y, text_weights=T,
                                                                             unlabeled=X_TEST[:1]), r"sample"),
    ("transductive unlabeled dim", lambda: ak.TransductiveGDA(device="cpu").fit(X, Y, text_weights=T,
                                                                                unlabeled=X_TEST[:, :8]),
     r"\bunlabeled\b"),
    ("undeclared input", lambda: ak.GDA(device="cpu").fit(X, Y, text_weights=T, captions=X), r"captions"),
    ("missing input", lambda: ak.TransductiveGDA(device="cpu").fit(X, Y, text_weights=T), r"\bunlabeled\b"),
    ("4-D X", lambda: ak.GDA(device="cpu").fit(X[:, None, None], Y, text_weights=T), r"\bX\b"),
]
AFTER_FIT = [
    ("predict wrong dim", lambda: fitted("gda").predict(X_TEST[:, :8]), r"\bX\b"),
    ("predict NaN", lambda: fitted("tip_adapter").logits(with_nan(X_TEST)), r"\bX\b"),
    ("score y length", lambda: fitted("gda").score(X_TEST, Y_TEST[:-1]), r"\by\b|samples"),
    ("unfitted predict", lambda: ak.GDA(device="cpu").predict(X_TEST), r"GDA|fit"),
    ("unfitted tune", lambda: ak.tune(ak.TipAdapter(device="cpu"), X_TEST, Y_TEST), r"TipAdapter|fit"),
    ("tune X_val dim", lambda: ak.tune(fitted("gda"), X_TEST[:, :8], Y_TEST), r"X_val|\bX\b"),
    ("tune y_val length", lambda: ak.tune(fitted("gda"), X_TEST, Y_TEST[:3]), r"y_val|\by\b|samples"),
    ("tune y_val unseen class", lambda: ak.tune(fitted("gda"), X_TEST, Y_TEST + 10), r"y_val|\by\b"),
    ("leaderboard unknown adapter", lambda: ak.leaderboard(X, Y, X_TEST, Y_TEST, text_weights=T, adapters=["gdaa"],
                                                           progress=False), r"adapters"),
    ("leaderboard grid for unknown adapter",
     lambda: ak.leaderboard(X, Y, X_TEST, Y_TEST, text_weights=T, adapters=["gda"], grids={"tip": {"beta": [1.0]}},
                            progress=False), r"grids"),
]


@pytest.mark.parametrize("case,call,pattern", BAD_FIT_INPUTS + AFTER_FIT,
                         ids=[c for c, _, _ in BAD_FIT_INPUTS + AFTER_FIT])
def test_bad_data_is_refused(case, call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()


TDA_CASES = [
    ("text 1-D", lambda: TDA(T[0]), r"text_weights"),
    ("text NaN", lambda: TDA(with_nan(T)), r"text_weights"),
    ("pos_capacity 0", lambda: TDA(T, pos_capacity=0), r"pos_capacity"),
    ("pos_capacity float", lambda: TDA(T, pos_capacity=2.5), r"pos_capacity"),
    ("pos_alpha NaN", lambda: TDA(T, pos_alpha=NAN), r"pos_alpha"),
    ("neg_beta string", lambda: TDA(T, neg_beta="1"), r"neg_beta"),
    ("neg_entropy reversed", lambda: TDA(T, neg_entropy=(0.5, 0.2)), r"neg_entropy"),
    ("neg_mask length", lambda: TDA(T, neg_mask=(0.1,)), r"neg_mask"),
    ("entropy_normalization", lambda: TDA(T, entropy_normalization="log10"), r"entropy_normalization"),
    ("device", lambda: TDA(T, device="tpu"), r"device"),
    ("update wrong dim", lambda: TDA(T, device="cpu").update_predict(X_TEST[:, :8]), r"features|\bX\b"),
    ("update NaN", lambda: TDA(T, device="cpu").update_predict(with_nan(X_TEST)), r"features|\bX\b"),
]


@pytest.mark.parametrize("case,call,pattern", TDA_CASES, ids=[c for c, _, _ in TDA_CASES])
def test_tda_bad_input(case, call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()


TCA_CASES = [
    ("keep 0", {"keep": 0.0}, r"keep"), ("keep above 1", {"keep": 1.5}, r"keep"), ("keep NaN", {"keep": NAN}, r"keep"),
    ("condense", {"condense": "prune"}, r"condense"), ("reservoir_size 0", {"reservoir_size": 0}, r"reservoir_size"),
    ("ranking", {"ranking": "max"}, r"ranking"), ("lam NaN", {"lam": NAN}, r"lam"), ("beta -1", {"beta": -1.0}, r"beta"),
    ("layers out of range", {"layers": [99]}, r"layers"), ("use_anchors", {"use_anchors": "yes"}, r"use_anchors"),
]


@pytest.mark.parametrize("case,options,pattern", TCA_CASES, ids=[c for c, _, _ in TCA_CASES])
def test_tca_bad_input(tiny, digits, case, options, pattern):
    text = tiny.text_classifier(digits.classnames, digits.templates)
    with pytest.raises((ValueError, TypeError), match=pattern):
        TCA(tiny, text, **options)


def test_tca_text_weights_of_another_width(tiny):
    with pytest.raises(ValueError, match="text_weights"):
        TCA(tiny, torch.randn(10, 7))


SUPPORT_CASES = [
    ("dim 0", lambda: SupportIndex(0), r"dim"), ("dim float", lambda: SupportIndex(16.0), r"dim"),
    ("kind", lambda: SupportIndex(16, kind="lsh"), r"kind"),
    ("nprobe 0", lambda: SupportIndex(16, kind="ivf_flat", nprobe=0), r"nprobe"),
    ("pq_m not dividing dim", lambda: SupportIndex(16, kind="ivf_pq", pq_m=5), r"pq_m"),
    ("pq_bits", lambda: SupportIndex(16, kind="ivf_pq", pq_m=4, pq_bits=0), r"pq_bits"),
    ("hnsw_m", lambda: SupportIndex(16, kind="hnsw", hnsw_m=-1), r"hnsw_m"),
    ("device", lambda: SupportIndex(16, device="tpu"), r"device"),
    ("add wrong dim", lambda: SupportIndex(16, device="cpu").add(X[:, :8], Y), r"features"),
    ("add labels length", lambda: SupportIndex(16, device="cpu").add(X, Y[:3]), r"labels"),
    ("add NaN", lambda: SupportIndex(16, device="cpu").add(with_nan(X), Y), r"features"),
    ("search k 0", lambda: _index().search(X_TEST, 0), r"\bk\b"),
    ("search wrong dim", lambda: _index().search(X_TEST[:, :8], 3), r"queries"),
]


def _index():
    index = SupportIndex(16, device="cpu")
    index.add(X, Y)
    return index


@pytest.mark.parametrize("case,call,pattern", SUPPORT_CASES, ids=[c for c, _, _ in SUPPORT_CASES])
def test_support_index_bad_input(case, call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()


def _persistence_cases(tmp_path, tiny):
    adapter = fitted("gda")
    good = tmp_path / "good.safetensors"
    adapter.save(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-7])
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an adapter")
    features = tmp_path / "features.safetensors"
    ak.save_features(ak.FeatureSet(torch.from_numpy(X), torch.from_numpy(Y), [f"c{i}" for i in range(4)]),
                     features)
    (tmp_path / "folder").mkdir()
    X64, y64, _, _, T64 = clip_like(n_classes=4, dim=64, per_class=3, n_test=1)
    on_tiny = ak.GDA(device="cpu").fit(X64, y64, text_weights=T64)
    return [
        ("save to a folder", lambda: adapter.save(tmp_path / "folder"), r"folder|directory"),
        ("backbone as a string", lambda: adapter.save(tmp_path / "a.safetensors", backbone="ViT-B-32"),
         r"backbone"),
        ("classnames length", lambda: adapter.save(tmp_path / "b.safetensors", classnames=["a"]), r"classnames"),
        ("load truncated", lambda: ak.load_adapter(truncated), r"truncated\.safetensors"),
        ("load text file", lambda: ak.load_adapter(text_file), r"notes\.txt"),
        ("load a features file as an adapter", lambda: ak.load_adapter(features), r"features\.safetensors"),
        ("load_features of an adapter file", lambda: ak.load_features(good), r"good\.safetensors"),
        ("save_features dtype", lambda: ak.save_features(ak.load_features(features), tmp_path / "c.safetensors",
                                                         dtype="float64"), r"dtype"),
        ("save_features float16 overflow", lambda: ak.save_features(
            ak.FeatureSet(torch.full((4, 16), 1e6), torch.arange(4), list("abcd")),
            tmp_path / "d.safetensors", dtype="float16"), r"float16"),
        ("FeatureSet labels beyond classes",
         lambda: ak.FeatureSet(torch.from_numpy(X), torch.from_numpy(Y) + 4, list("abcd")), r"labels"),
        ("FeatureSet metadata not a dict",
         lambda: ak.FeatureSet(torch.from_numpy(X), torch.from_numpy(Y), list("abcd"), "toy"), r"metadata"),
        ("predictor top_k 0", lambda: ak.Predictor(tiny, on_tiny, list("abcd"),
                                                    allow_unchecked_backbone=True).top_k([], k=0), r"\bk\b"),
        ("predictor top_k > C", lambda: ak.Predictor(tiny, on_tiny, list("abcd"),
                                                      allow_unchecked_backbone=True).top_k([], k=5), r"\bk\b"),
        ("predictor classnames length", lambda: ak.Predictor(tiny, on_tiny, ["a"],
                                                              allow_unchecked_backbone=True), r"classnames"),
    ]


def test_persistence_and_predictor_bad_input(tmp_path, tiny):
    cases = _persistence_cases(tmp_path, tiny)
    for _, call, pattern in cases:
        with pytest.raises((ValueError, TypeError), match=pattern):
            call()
    assert len(cases) == 14


EXTRACT_CASES = [
    ("views 0", {"views": 0}, r"views"), ("views string", {"views": "10"}, r"views"),
    ("seed None", {"seed": None}, r"seed"), ("seed negative", {"seed": -1}, r"seed"),
    ("dtype", {"dtype": "int8"}, r"dtype"), ("batch_size 0", {"batch_size": 0}, r"batch_size"),
    ("num_workers negative", {"num_workers": -1}, r"num_workers"), ("num_workers word", {"num_workers": "many"},
                                                                    r"num_workers"),
    ("decode", {"decode": "nvjpeg"}, r"decode"), ("engine", {"engine": "spark"}, r"engine"),
    ("on_error", {"on_error": "ignore"}, r"on_error"), ("shard_size 0", {"shard_size": 0}, r"shard_size"),
    ("ray engine without address type", {"engine": "ray", "address": 5}, r"address"),
]


@pytest.mark.parametrize("case,options,pattern", EXTRACT_CASES, ids=[c for c, _, _ in EXTRACT_CASES])
def test_extract_bad_input(tiny, digits, tmp_path, case, options, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        ak.extract(tiny, digits.split("val"), cache_dir=tmp_path, progress=False, **options)


def test_extract_empty_set_and_unwritable_cache(tiny, digits, tmp_path):
    images = digits.split("val")
    with pytest.raises(ValueError, match="images"):
        ak.extract(tiny, images.subset([], "none"), cache_dir=tmp_path, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cache_dir"):
        ak.extract(tiny, images, cache_dir=blocker / "cache", progress=False)


DATASET_CASES = [
    ("unknown name", lambda d: ak.datasets.load("imagenett"), r"imagenett"),
    ("shots 0", lambda d: d.few_shot(0, 1), r"shots"), ("shots string", lambda d: d.few_shot("16", 1), r"shots"),
    ("shots too many", lambda d: d.few_shot(10_000, 1), r"shots"), ("seed negative", lambda d: d.few_shot(1, -1),
                                                                    r"seed"),
    ("split", lambda d: d.split("testing"), r"split"), ("few_shot split", lambda d: d.few_shot(1, 1, split="dev"),
                                                       r"split"),
    ("root for digits is a file", lambda d: ak.datasets.load("oxford_pets", root=__file__), r"root|oxford_pets"),
]


@pytest.mark.parametrize("case,call,pattern", DATASET_CASES, ids=[c for c, _, _ in DATASET_CASES])
def test_dataset_bad_input(digits, case, call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call(digits)


BACKBONE_CASES = [
    ("unknown architecture", lambda: ak.Backbone("ViT-B-33", device="cpu"), r"ViT-B-33"),
    ("device", lambda: ak.Backbone(ak.TINY, device="tpu"), r"device"),
    ("precision", lambda: ak.Backbone(ak.TINY, device="cpu", precision="fp8"), r"precision"),
    ("init_seed", lambda: ak.Backbone(ak.TINY, device="cpu", init_seed="zero"), r"init_seed"),
    ("pretrained type", lambda: ak.Backbone(ak.TINY, pretrained=42, device="cpu"), r"pretrained"),
]


@pytest.mark.parametrize("case,call,pattern", BACKBONE_CASES, ids=[c for c, _, _ in BACKBONE_CASES])
def test_backbone_bad_input(case, call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()


TEXT_CASES = [
    ("template without a slot", ["a photo"], r"template"), ("empty templates", [], r"templates"),
    ("template type", [3], r"template"), ("two slots", ["{} and {}"], r"template"),
    ("dict missing a class", {"zero": ["a zero"]}, r"templates|prompts"),
]


@pytest.mark.parametrize("case,templates,pattern", TEXT_CASES, ids=[c for c, _, _ in TEXT_CASES])
def test_text_classifier_bad_templates(tiny, digits, case, templates, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        tiny.text_classifier(digits.classnames, templates)


def test_text_classifier_bad_classnames(tiny):
    for classnames in ([], ["cat", 3], "cat"):
        with pytest.raises((ValueError, TypeError), match="classnames"):
            tiny.text_classifier(classnames, ["a photo of a {}."])


def _session_probe_cases(tmp_path, tiny):
    """The probes of issue #21: each refused by name (ValueError, TypeError or FileNotFoundError)."""
    import torch

    from adaptkit.index import SupportIndex
    from adaptkit.support import class_queries
    from adaptkit.text import load_prompts
    from adaptkit.tta import TDA

    gda = ak.GDA(device="cpu").fit(tiny.encode_images(torch.rand(4, 3, 32, 32)), [0, 1, 0, 1])
    predictor = ak.Predictor(tiny, gda, classnames=["a", "b"], allow_unchecked_backbone=True)
    tda = TDA(T, device="cpu")
    state = tda.state_dict()
    state["pos_keys"][0, 0] = 3.0
    bad_template = tmp_path / "templates.txt"
    bad_template.write_text("a {name}\n")
    cases = [
        ("predictor 64-px tensor for a 32-px model", lambda: predictor.predict_proba(torch.rand(2, 3, 64, 64)),
         r"images as a tensor must be preprocessed pixels of shape \(N, 3, 32, 32\)"),
        ("TDA state with non-unit keys", lambda: tda.load_state_dict(state), r"pos_keys.*not L2-normalised"),
        ("templates file with a bad placeholder", lambda: load_prompts(bad_template), r"templates.txt"),
        ("local-dir that does not exist", lambda: ak.Backbone(f"local-dir:{tmp_path / 'none'}"), r"does not exist"),
        ("class_queries template not a string", lambda: class_queries(["a"], ["{}"]), r"template"),
        ("ivf_pq pool too small", lambda: SupportIndex(16, kind="ivf_pq", pq_m=2, device="cpu").add(
            torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)), r"pq_bits"),
        ("ivf nlist above the pool", lambda: SupportIndex(16, kind="ivf_flat", nlist=99, device="cpu").add(
            torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)), r"nlist"),
    ]
    if not torch.cuda.is_available():
        cases.append(("cuda without a GPU", lambda: ak.Backbone(ak.TINY, device="cuda"), r"device is 'cuda'"))
    return cases


def test_the_probes_of_the_last_audit_are_refused_by_name(tmp_path, tiny):
    for _, call, pattern in _session_probe_cases(tmp_path, tiny):
        with pytest.raises((ValueError, TypeError, FileNotFoundError), match=pattern):
            call()


def test_the_table_is_large_enough():
    counted = (len(BAD_HYPERPARAMETERS) + len(BAD_GRIDS) + len(BAD_FIT_INPUTS) + len(AFTER_FIT) + len(TDA_CASES)
               + len(TCA_CASES) + 1 + len(SUPPORT_CASES) + 14 + len(EXTRACT_CASES) + 2 + len(DATASET_CASES)
               + len(BACKBONE_CASES) + len(TEXT_CASES) + 3)
    assert counted >= 100, counted


FLOAT_PARAMETERS = [(n, p) for n, p in [("gda", "alpha"), ("tip_adapter", "alpha"), ("tip_adapter", "beta"),
                                        ("tip_x", "gamma"), ("ape", "beta"), ("proker", "beta"), ("proker", "lam"),
                                        ("caption_cache", "delta"), ("linear_probe", "C")]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(FLOAT_PARAMETERS),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not math.isfinite(v) or v < 0),
                       st.text(max_size=3), st.none(), st.booleans(), st.lists(st.floats(), max_size=2)))
def test_property_no_bad_float_parameter_fits(case, value):
    """Non-finite, negative, string, None, bool or list values of a non-negative float parameter are
    refused at fit, naming the parameter, whatever the value."""
    name, param = case
    if value == 0 and param in ("alpha", "gamma", "delta"):
        return
    with pytest.raises((ValueError, TypeError), match=rf"\b{param}\b"):
        fitted(name, **{param: value})


@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0, max_value=X.size - 1),
       value=st.sampled_from([NAN, INF, -INF]))
def test_property_any_non_finite_feature_is_refused(position, value):
    bad = np.array(X, copy=True)
    bad.flat[position] = value
    with pytest.raises(ValueError, match=r"\bX\b"):
        ak.TipAdapter(device="cpu").fit(bad, Y, text_weights=T)
