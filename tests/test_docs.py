"""The documentation a user scans stays true to the code: the options reference is generated from the options
tree, every relative link resolves, and the README keeps its two set-up commands (the project's contract)."""
import os
import re

from pipeline.settings import OPTIONS, reference_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md")] + [os.path.join(ROOT, "docs", f) for f in
                                            sorted(os.listdir(os.path.join(ROOT, "docs"))) if f.endswith(".md")]


def test_the_options_reference_is_generated_from_the_options_tree():
    with open(os.path.join(ROOT, "docs", "options.md")) as f:
        text = f.read()
    assert text == reference_markdown(), "docs/options.md is stale: regenerate it (its first lines say how)"
    for o in OPTIONS:
        assert f"`--{o.name.replace('_', '-')}" in text


def test_every_relative_link_resolves():
    for path in DOCS:
        with open(path) as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert os.path.exists(os.path.join(os.path.dirname(path), target)), f"{path}: {target}"


def test_the_readme_keeps_its_two_set_up_commands_and_no_link_outside_the_repository():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert "pip install -e . torch==2.13.0 && streamer serve" in text
    assert "pip install -e '.[test]' torch==2.13.0 && OMP_NUM_THREADS=1 python -m pytest -q" in text
    for path in DOCS:
        with open(path) as f:
            assert "../shared/" not in f.read(), path
