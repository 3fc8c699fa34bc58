"""The shape of the source tree: one layer per folder, small modules, a light CLI."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_TOP_MODULES = 8


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_no_two_consumer_modules_share_a_file_name() -> None:
    names = Counter(p.name for p in _modules("consumer") if p.name != "__init__.py")
    assert [name for name, count in names.items() if count > 1] == []


def test_few_modules_at_the_top_of_consumer() -> None:
    top = sorted(p.name for p in (ROOT / "consumer").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_no_module_is_too_long() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules("consumer") + _modules("pipeline")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_cli_loads_neither_torch_nor_diffusers() -> None:
    # Every command module is imported to build the parser, as `--help` does;
    # the contract and the settings are what `submit` and `dlq` load besides.
    code = (
        "import sys; from consumer.cli.main import build_parser; build_parser(); "
        "import consumer.settings, consumer.contract.request, consumer.aws.queue_meta; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_pipeline_api_and_the_blank_generator_load_no_torch() -> None:
    # The consumer's whole view of the pipeline is `pipeline.api`: importing
    # every module of it, and building the blank generator through the
    # factory, must leave torch, diffusers and transformers unloaded.
    api = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "pipeline" / "api").glob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {api!r}]; "
        "from pipeline.api.config import BUILTIN_BLANK, PipelineConfig; "
        "from pipeline.api.factory import create_generator; "
        "create_generator(PipelineConfig(model_path=BUILTIN_BLANK)); "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert len(api) >= 6
    assert out.stdout.strip() == "[]"
