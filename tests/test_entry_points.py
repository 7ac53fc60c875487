"""Every module and entry script compiles and imports (cheap guard for CLI-only code; the
documented commands themselves run in test_docs_commands.py)."""

import compileall
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ["coleaf_jax.demo", "coleaf_jax.bench", "coleaf_jax.flops", "coleaf_jax.data.synthetic"]


def test_everything_compiles():
    for path in ("coleaf_jax", "configs", "tests", "train.py", "eval.py", "parse.py"):
        full = os.path.join(ROOT, path)
        ok = (
            compileall.compile_dir(full, quiet=1, force=True)
            if os.path.isdir(full)
            else compileall.compile_file(full, quiet=1, force=True)
        )
        assert ok, path


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    module = importlib.import_module(name)
    assert callable(module.main)
