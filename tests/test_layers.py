"""Imports flow one way: common → pipeline, transports → streamer → clients. Every import in every module counts,
also the ones inside functions."""
import ast
import os

from conftest import ROOT

LAYER = {"common": 0, "pipeline": 1, "transports": 1, "streamer": 2, "clients": 3}


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def test_no_module_imports_a_layer_above_or_beside_its_own():
    bad, seen = [], 0
    for pkg, layer in LAYER.items():
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                seen += 1
                for line, top in _imports(path):
                    if top in LAYER and top != pkg and LAYER[top] >= layer:
                        bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports {top}")
    assert seen > 40  # the walk really read the packages
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_check_sees_an_upward_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from clients.commands import x\n")
    assert list(_imports(str(f))) == [(2, "clients")]
