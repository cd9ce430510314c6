"""Start-up: where the environment turns bytecode off over packages installed without .pyc files, the daemon and
its engine ranks keep their bytecode in the cache folder (common/cache.py), so a restart does not compile the
packages' sources again; where the packages have their .pyc files, or bytecode is written anyway, nothing
changes."""
import compileall
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

PROBE = ("import json, sys; from common.cache import use_bytecode_cache; path = use_bytecode_cache('fakepkg'); "
         "import fakepkg; print(json.dumps([path, fakepkg.VALUE, sys.dont_write_bytecode]))")


@pytest.fixture
def pkg(tmp_path):
    src = tmp_path / "src" / "fakepkg"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("VALUE = 41 + 1\n")
    return src


def run(tmp_path, src, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    e.update(PYTHONPATH=os.pathsep.join([str(src.parent), ROOT]), STREAMER_COMPILE_CACHE=str(tmp_path / "cache"),
             **env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=e, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def cached_pycs(tmp_path):
    root = tmp_path / "cache" / "pycache"
    return sorted(p.name for p in root.rglob("*.pyc")) if root.exists() else []


def test_no_bytecode_and_no_pyc_files_uses_the_cache_folder(tmp_path, pkg):
    path, value, off = run(tmp_path, pkg, PYTHONDONTWRITEBYTECODE="1")
    assert value == 42 and path == str(tmp_path / "cache" / "pycache") and off is False
    assert any(name.startswith("__init__.") for name in cached_pycs(tmp_path))  # written to the cache...
    assert not (pkg / "__pycache__").exists()  # ...and not next to the package's sources
    assert run(tmp_path, pkg, PYTHONDONTWRITEBYTECODE="1")[0] == path  # a restart reads it (same folder)


def test_packages_with_their_pyc_files_are_left_alone(tmp_path, pkg):
    assert compileall.compile_dir(str(pkg), quiet=1)
    path, value, off = run(tmp_path, pkg, PYTHONDONTWRITEBYTECODE="1")
    assert (path, value, off) == (None, 42, True) and cached_pycs(tmp_path) == []


@pytest.mark.parametrize("env", [{}, {"PYTHONDONTWRITEBYTECODE": "1", "STREAMER_NO_BYTECODE_CACHE": "1"}],
                         ids=["bytecode-on", "opted-out"])
def test_nothing_changes_where_it_is_not_needed(tmp_path, pkg, env):
    path, value, _ = run(tmp_path, pkg, **env)
    assert path is None and value == 42 and cached_pycs(tmp_path) == []
