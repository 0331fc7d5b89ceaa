"""The command line: short errors in CLI terms, clean logs, options, and the demo/extract commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptkit.cli import app
from adaptkit.results import summary_table

runner = CliRunner()
CURSOR_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run_cli(*args, env=None, timeout=60):
    """``adaptkit ...`` in a fresh process, as a user's terminal runs it (CI unset, 80 columns)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "ADAPTKIT_DEBUG")}
    environment.update({"COLUMNS": "80", **(env or {})})
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "adaptkit.cli", *args], capture_output=True, text=True,
                          env=environment, timeout=timeout)
    return done, time.perf_counter() - start


@pytest.mark.slow
def test_demo_prints_a_table_and_the_random_init_warning(tmp_path):
    result = runner.invoke(app, ["demo", "--shots", "1,2", "--seeds", "1,2", "--views", "2",
                                 "--cache-dir", str(tmp_path), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "| adapter | 1 shot | 2 shots |" in result.output
    from adaptkit.adapters import ADAPTERS
    from adaptkit.protocol import PROTOCOL_INPUTS

    for name, cls in ADAPTERS.items():
        runs = all(name in PROTOCOL_INPUTS for name, spec in cls.fit_inputs.items() if spec.required)
        row = re.search(rf"\| {name} \| \d+\.\d\d ± \d+\.\d\d \| \d+\.\d\d ± \d+\.\d\d \|", result.output)
        assert bool(row) == runs, name
    assert "RANDOMLY INITIALISED" in result.output
    assert "adaptkit demo --backbone ViT-B-32 --pretrained openai" in result.output


@pytest.fixture
def bad_inputs(tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text("picture,good,bad\na.jpg,x,y\n")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('adapters = ["gda"]\nshotz = [1]\n[[datasets]]\nname = "digits"\n[[backbones]]\nname = "adaptkit-tiny"\n')
    return {
        "unknown dataset": (["demo", "nosuch"], "nosuch"),
        "missing root": (["demo", "dtd", "--root", str(tmp_path / "nowhere")], "nowhere"),
        "bad CSV header": (["compose", "eval", "--csv", str(csv)], "picture"),
        "unknown recipe key": (["compare", str(recipe)], "shotz"),
        "missing adapter file": (["predict", "--adapter", str(tmp_path / "gone.safetensors"), str(tmp_path)],
                                 "gone.safetensors"),
        "misspelt backbone": (["extract", "digits", "--backbone", "ViT-B32"], "--backbone 'ViT-B32'"),
        "offline weights": (["demo", "--backbone", "ViT-B-32", "--pretrained", "openai", "--cache-dir", str(tmp_path)],
                            "--pretrained FILE"),
    }


@pytest.mark.parametrize("case", ["unknown dataset", "missing root", "bad CSV header", "unknown recipe key",
                                  "missing adapter file", "misspelt backbone"])
def test_bad_input_gives_a_short_message_in_cli_terms(bad_inputs, case):
    args, name = bad_inputs[case]
    result = runner.invoke(app, args)
    usage_error = case == "unknown dataset"  # a choice: click refuses it while parsing
    assert result.exit_code == (2 if usage_error else 1), result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 12, result.output
    assert name in result.output and ("Invalid value for 'DATASET'" in result.output if usage_error
                                      else result.output.startswith("adaptkit: error: ")), result.output
    if case == "missing root":
        assert "next: adaptkit data prepare dtd --root" in result.output
    if case == "misspelt backbone":
        assert "ViT-B-32" in result.output and "adaptkit models lists" in result.output
        assert "name=" not in result.output and "list_backbones" not in result.output


@pytest.mark.slow
def test_offline_weights_fail_fast_with_a_short_message_in_a_real_terminal(bad_inputs, tmp_path):
    """The whole path a user's terminal takes (a fresh process, no network): one short message, in seconds."""
    args, name = bad_inputs["offline weights"]
    done, seconds = run_cli(*args, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                                        "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output and len(output.strip().splitlines()) <= 12, output
    assert name in output and "pretrained=" not in output.replace("pretrained=<tag>", ""), output
    assert seconds < 30


def test_debug_shows_the_traceback(tmp_path):
    from adaptkit.data.base import DatasetFilesMissing

    result = runner.invoke(app, ["demo", "dtd", "--root", str(tmp_path / "nowhere"), "--debug"])
    assert result.exit_code != 0 and isinstance(result.exception, DatasetFilesMissing), result.output
    assert "adaptkit: error:" not in result.output


@pytest.mark.slow
def test_a_redirected_demo_log_has_no_cursor_codes_and_no_root_warnings(tmp_path):
    log = tmp_path / "log"
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "adaptkit.cli", "demo", "--shots", "1", "--seeds", "1",
                               "--views", "2", "--cache-dir", str(tmp_path / "cache")], stdout=handle,
                              stderr=subprocess.STDOUT, env=environment, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert not CURSOR_CODES.search(text) and "\r" not in text
    assert "WARNING:root" not in text and "initialized randomly" not in text
    assert "| gda |" in text


def test_version_models_and_ranges():
    from adaptkit import __version__

    assert runner.invoke(app, ["--version"]).output.strip() == f"adaptkit {__version__}"
    listed = runner.invoke(app, ["models", "--pretrained"]).output
    assert re.search(r"^ViT-B-32\t.*\bopenai\b", listed, re.MULTILINE)
    for args in (["demo", "--shots", "0"], ["demo", "--shots", "1,four"], ["tta", "--limit", "-5"],
                 ["extract", "digits", "--batch-size", "0"], ["extract", "digits", "--shots", "0"],
                 ["tta", "--method", "tdx"], ["extract", "digits", "--workers", "many"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
    refused = runner.invoke(app, ["tta", "--method", "tdx"]).output
    assert "Invalid value for '--method': 'tdx' is not one of 'tda', 'tca'" in refused, refused


def test_extract_reports_shape_and_where_the_features_are(tmp_path):
    args = ["extract", "digits", "--split", "train", "--shots", "2", "--views", "3", "--cache-dir", str(tmp_path),
            "--device", "cpu", "--output", str(tmp_path / "f.safetensors"), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    match = re.search(r"digits/train/2shot-seed1: features \(20, 3, 64\) stored in (\S+)", result.output)
    assert match and Path(match.group(1)).is_file()
    import adaptkit as ak

    assert ak.load(tmp_path / "f.safetensors").features.shape == (20, 3, 64)


def test_summary_table_is_mean_and_sample_std_over_seeds():
    rows = [{"adapter": "gda", "shots": 1, "acc1": a} for a in (0.5, 0.6, 0.7)]
    rows += [{"adapter": "gda", "shots": 4, "acc1": 0.8}]
    table = summary_table(rows)
    assert "| gda | 60.00 ± 10.00 | 80.00 ± 0.00 |" in table


def test_version_and_help_start_without_importing_torch():
    """`adaptkit --version` and `--help` import neither torch nor the library behind the commands."""
    from adaptkit._options import DATASET_NAMES
    from adaptkit.data import NAMES

    assert DATASET_NAMES == NAMES
    for flag in ("--version", "--help"):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "adaptkit.cli", flag], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
        assert not {"torch", "open_clip", "sklearn", "numpy"} & imported, flag
    assert "adaptkit " in subprocess.run([sys.executable, "-m", "adaptkit.cli", "--version"], capture_output=True,
                                         text=True, timeout=60).stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line_naming_the_device():
    result = runner.invoke(app, ["demo", "--device", "cuda"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "device is 'cuda' but this machine has no CUDA device" in result.output


def test_quiet_and_debug_work_before_the_sub_command(tmp_path):
    quiet = runner.invoke(app, ["--quiet", "models"])
    assert quiet.exit_code == 0 and "adaptkit-tiny" in quiet.output
    debug = runner.invoke(app, ["--debug", "demo", "dtd"])
    assert isinstance(debug.exception, ValueError) and "root is required" in str(debug.exception)
    plain = runner.invoke(app, ["demo", "dtd"])
    assert plain.exit_code == 1 and "adaptkit: error: root is required" in plain.output


def test_precision_is_a_choice_on_commands_and_in_recipes(tmp_path):
    from adaptkit.recipes import RecipeError, parse_recipe

    bad = runner.invoke(app, ["extract", "digits", "--precision", "fp64"])
    assert bad.exit_code == 2 and "fp64" in bad.output
    done = runner.invoke(app, ["extract", "digits", "--precision", "fp32", "--shots", "1", "--cache-dir", str(tmp_path),
                               "--device", "cpu", "--quiet"])
    assert done.exit_code == 0, done.output
    base = {"adapters": ["gda"], "datasets": [{"name": "digits"}]}
    recipe = parse_recipe({**base, "backbones": [{"name": "adaptkit-tiny", "precision": "fp32"}]}, "p.toml")
    assert recipe.backbones[0].precision == "fp32"
    with pytest.raises(RecipeError, match=r"backbones\[0\].precision: The 'precision' parameter"):
        parse_recipe({**base, "backbones": [{"name": "adaptkit-tiny", "precision": "fp64"}]}, "p.toml")


@pytest.mark.slow
def test_a_folder_with_one_bad_image_goes_through_demo_and_compare_with_on_error_skip(tmp_path):
    from helpers import write_jpegs

    write_jpegs(tmp_path / "data", n_classes=2, per_class=12, size=(32, 32))
    (tmp_path / "data" / "class_0" / "0003.jpg").write_bytes(b"not a jpeg")
    common = ["demo", "imagefolder", "--root", str(tmp_path / "data"), "--shots", "1", "--seeds", "1",
              "--views", "1", "--adapters", "zero_shot,gda", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    refused = runner.invoke(app, common)
    assert refused.exit_code == 1 and "pass --on-error skip to leave unreadable images out" in refused.output
    assert "'skip'" not in refused.output
    skipped = runner.invoke(app, [*common, "--on-error", "skip"])
    assert skipped.exit_code == 0, skipped.output
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'adapters = ["gda"]\nshots = [1]\nseeds = [1]\nviews = 1\non_error = "skip"\n'
                      f'output = "{tmp_path / "out"}"\ncache_dir = "{tmp_path / "cache"}"\n[[datasets]]\n'
                      f'name = "imagefolder"\nroot = "{tmp_path / "data"}"\n[[backbones]]\nname = "adaptkit-tiny"\n')
    compared = runner.invoke(app, ["compare", str(recipe), "--quiet"])
    assert compared.exit_code == 0, compared.output


def test_split_is_a_choice_and_every_backbone_option_names_the_hub_and_local_forms():
    bad = runner.invoke(app, ["extract", "digits", "--split", "validation"])
    assert bad.exit_code == 2 and "validation" in bad.output
    for command in (["extract"], ["demo"], ["tta"], ["compose", "eval"], ["support", "build"]):
        help_text = "".join(runner.invoke(app, [*command, "--help"]).output.split())  # whatever the wrapping
        assert "hf-hub:org/repo" in help_text and "local-dir:" in help_text, command


def _commands(group, prefix=()):
    import typer.main

    click_group = typer.main.get_command(group) if not hasattr(group, "commands") else group
    for name, sub in click_group.commands.items():
        if hasattr(sub, "commands"):
            yield from _commands(sub, (*prefix, name))
        else:
            yield (*prefix, name)


def test_every_help_page_reads_as_english():
    """Usage lines name arguments in capitals (``extract [OPTIONS] DATASET``) and metavars say what
    to type (``N``, ``DIR``, ``raise|skip``), never Python types (``<str>``, ``list[Path]``, ``{dataset}``)."""
    commands = list(_commands(app))
    assert {("extract",), ("demo",), ("support", "build"), ("data", "check"), ("serve",)} <= set(commands)
    for command in commands:
        text = runner.invoke(app, [*command, "--help"], prog_name="adaptkit", terminal_width=200).output
        usage = text.splitlines()[0]
        assert usage.startswith(f"Usage: adaptkit {' '.join(command)} [OPTIONS]"), usage
        assert all(re.fullmatch(r"\[?[A-Z_]+(\.\.\.)?\]?", word) for word in usage.split("[OPTIONS]")[1].split()), usage
        options = text.split("Options:")[1]
        assert not re.search(r"<\w|list\[|\b(str|int|float|Path)\b", options), (command, options)
    usages = {c[-1]: runner.invoke(app, [*c, "--help"]).output.splitlines()[0] for c in commands}
    assert usages["extract"].endswith("[OPTIONS] DATASET") and usages["demo"].endswith("[OPTIONS] [DATASET]")
    assert usages["tta"].endswith("[OPTIONS] [DATASET]") and usages["check"].endswith("[OPTIONS] DATASET")
    assert usages["build"].endswith("[OPTIONS] POOL...")
    extract = runner.invoke(app, ["extract", "--help"], terminal_width=200).output
    assert "--on-error raise|skip " in extract and "--batch-size N " in extract and "--root DIR " in extract
    assert re.search(r"DATASET\s+dataset name: digits, caltech101,", extract)


def test_the_dataset_is_positional_in_every_command_that_takes_one():
    shown = runner.invoke(app, ["demo", "nosuch"])
    assert shown.exit_code == 2 and "nosuch" in shown.output
    assert "No such option" in runner.invoke(app, ["demo", "--dataset", "digits"]).output
    assert runner.invoke(app, ["tta", "nosuch"]).exit_code == 2
