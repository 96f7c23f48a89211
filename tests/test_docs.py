"""The front door: the README, the documentation site and the help text.

- the site builds with ``mkdocs build --strict`` (a broken link, a missing page or figure, an
  unresolved anchor or include fails), and shows what the code holds;
- the getting-started blocks titled *checked by tests/test_docs.py* run as written;
- the adding-a-method example defines a method the registry takes, builds and trains a step of;
- every command's help starts with what it does, and its examples are the documentation's;
- every section of benchmarks/RESULTS.md is shown on a page;
- the README stays short, its second bash block is CI's test command, its links resolve.

The docs packages come with the ``test`` extra (pyproject.toml): the tests that need them are
skipped, with the install line as the reason, only where they are missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
#: The title that marks a code block the suite runs as written.
CHECKED = 'title="checked by tests/test_docs.py"'
#: A command's help starts with one of these: it says what the command does.
VERBS = {"Generate", "Build", "Check", "Decode", "Run", "Train", "Write", "Test", "Compare", "Draw", "Score", "Serve",
         "Extract", "Search", "Export"}

needs_mkdocs = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                                  reason="the docs packages are missing: pip install -e '.[test]' (or '.[docs]')")


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    """``(info string, body)`` of every fenced code block of a Markdown file (``` fences)."""
    blocks, info, body = [], None, []
    for line in path.read_text().splitlines():
        if info is None and line.startswith("```"):
            info, body = line[3:].strip(), []
        elif info is not None and line.startswith("```"):
            blocks.append((info, "\n".join(body)))
            info = None
        elif info is not None:
            body.append(line)
    return blocks


def docs_text() -> str:
    """Every page of the site and the README, as one text."""
    return "\n".join(p.read_text() for p in [README, *sorted(DOCS.rglob("*.md"))])


# --------------------------------------------------------------------------- the site


@needs_mkdocs
def test_the_site_builds_strictly_and_shows_what_the_code_holds(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pages = {p.relative_to(DOCS).with_suffix("") for p in DOCS.rglob("*.md")}
    for page in pages:
        html = site / ("index.html" if page.name == "index" and page.parent == Path(".") else
                       (page.parent / "index.html" if page.name == "index" else page / "index.html"))
        assert html.is_file(), f"{page} was not built"
    methods = (site / "methods" / "index.html").read_text()
    assert "[fusion.recipes.agw]" in methods and "[fusion.recipes.glmn]" in methods  # the profile's tables, from the profile
    results = (site / "results" / "index.html").read_text()
    assert "<code>caj</code>" in results and "<code>nosquare</code>" in results  # the registry's modifiers
    assert "Ablation on demo (demo profile), 5 seeds" in results  # RESULTS.md's sections, included
    assert "pipeline export" in (site / "development" / "index.html").read_text()  # the commands table
    assert "ReidExtractor" in (site / "api" / "pipelines" / "index.html").read_text()  # the API from the docstrings
    for html in site.rglob("*.html"):
        text = html.read_text()
        assert "--8&lt;--" not in text and "--8<--" not in text, f"{html}: an include was not replaced"
        assert "<!-- profile-table" not in text and "<!-- modifiers-table" not in text, html


def test_every_results_section_is_shown_on_a_page():
    text = RESULTS.read_text()
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    included = set(re.findall(r'^--8<-- "benchmarks/RESULTS\.md:([\w-]+)"$', pages, re.M))
    open_section, shown, marked = None, [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        marker = re.search(r"--8<-- \[(start|end):([\w-]+)\]", line)
        if marker:
            kind, name = marker.groups()
            assert (kind == "start") == (open_section is None), f"RESULTS.md line {number}: markers must not nest or overlap"
            open_section = name if kind == "start" else None
            marked.add(name)
        elif line.startswith("#") and number > 1:
            assert open_section in included, (f"RESULTS.md line {number} ({line!r}) is in no section a docs page includes: "
                                              "put it inside a [start:NAME]/[end:NAME] pair that a page includes")
            shown.append(line)
    assert open_section is None and shown
    assert included <= marked, f"pages include sections RESULTS.md does not mark: {sorted(included - marked)}"


@pytest.mark.slow
def test_the_getting_started_blocks_run_as_written(tmp_path):
    blocks = [body for info, body in fenced_blocks(DOCS / "getting-started.md") if info.startswith("bash") and CHECKED in info]
    assert len(blocks) >= 2, "getting-started.md lost its checked blocks"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "NO_MKDOCS_2_WARNING": "1"}
    outputs = []
    for body in blocks:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{body}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        outputs.append(proc.stdout)
    assert "run-all" in outputs[0]  # pipeline --help lists the commands
    peek = tmp_path / "data" / "demo-peek"
    assert (peek / "aligned_nir").is_dir() and (peek / "exp" / "test_id.txt").is_file()
    assert "train" in outputs[1] and "test" in outputs[1]  # check-data's table of the splits


def test_the_adding_a_method_example_is_a_method_the_registry_takes(monkeypatch):
    import torch

    from common.config import Recipe
    from pipelines.ablate import parse_variant
    from stage2_fusion.methods import METHODS, build_method, load_config

    blocks = {info.split()[0]: body for info, body in fenced_blocks(DOCS / "adding-a-method.md") if CHECKED in info}
    module = types.ModuleType("tiny_method_example")  # a module of its own, as stage2_fusion/methods/tiny.py would be
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(blocks["python"], "adding-a-method.md", "exec"), module.__dict__)
    spec = module.SPEC
    assert spec.name == "tiny" and issubclass(spec.recipe_type, Recipe)
    monkeypatch.setitem(METHODS, "tiny", spec)
    table = tomllib.loads(blocks["toml"])["fusion"]["recipes"]["tiny"]
    cfg = load_config("demo", overrides={"fusion": {"recipes": {"tiny": table}}})
    assert cfg.fusion.recipe("tiny").channels == 8
    assert parse_variant("tiny-wide").overrides == {"fusion": {"recipes": {"tiny": {"channels": 16}}}}
    model, loss_fn = build_method("tiny", cfg, num_classes=3)
    torch.manual_seed(0)
    inputs = {"vis": torch.randn(4, 3, 32, 16), "ir": torch.randn(4, 3, 32, 16)}
    labels = torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    losses = loss_fn(model(inputs), labels, torch.tensor([False] * 4 + [True] * 4), cfg.fusion.recipe("tiny"))
    losses["total"].backward()
    assert torch.isfinite(losses["total"]) and model.stems["vis"].weight.grad is not None
    feats = model.extract(inputs)
    assert feats.shape == (8, 8) and torch.allclose(feats.norm(dim=1), torch.ones(8), atol=1e-5)


# --------------------------------------------------------------------------- help text


def _commands():
    import typer.main

    from pipelines.cli import app

    group = typer.main.get_command(app)
    return group, group.commands


def test_every_command_says_what_it_does_and_its_examples_are_the_docs():
    group, commands = _commands()
    text = docs_text()
    assert group.help.startswith("Train and test visible-infrared person re-ID") and "pipeline run-all" in group.help
    for name, command in commands.items():
        first = command.help.strip().splitlines()[0]
        assert first.split()[0].rstrip(":") in VERBS and first.endswith("."), f"pipeline {name}: {first!r}"
        examples = re.findall(r"^\s*(?:Examples?: )?(pipeline \S.*)$", command.help, re.M)
        assert examples, f"pipeline {name} --help shows no example"
        for example in examples:
            assert example.strip() in text, f"pipeline {name} --help example is in no docs page: {example}"
        assert f"pipeline {name}" in text, f"pipeline {name} is documented nowhere"


# --------------------------------------------------------------------------- the README


def test_the_readme_is_short_and_its_second_bash_block_is_cis_test_command():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most 200: move the rest into docs/)"
    proc = subprocess.run(["awk", r'/^```bash$/{n++; next} /^```$/{if (n==2) exit} n==2', str(README)], capture_output=True,
                          text=True, check=True)  # exactly how .ci/run reads it
    command = proc.stdout.strip()
    assert "pip install -e '.[test]'" in command and command.endswith("python -m pytest -q"), command
    assert "awk '/^```bash$/{n++; next} /^```$/{if (n==2) exit} n==2' README.md" in (ROOT / ".ci" / "run").read_text()
    # the [test] extra brings the docs packages, so CI builds the site too
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras["docs"]) <= set(extras["test"])


def _slug(heading: str) -> str:
    """The anchor of a Markdown heading, as GitHub and MkDocs' toc make it for plain words."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r"\s+", "-", text).strip("-")


def test_the_readme_links_and_figure_resolve():
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"https?://", link)]
    assert any(link.startswith("docs/img/") for link in local), "the README lost its figure"
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), f"README links to {link}, which does not exist"
        if anchor:
            headings = [_slug(line.lstrip("#")) for line in target.read_text().splitlines() if line.startswith("#")]
            assert anchor in headings, f"README links to {link}: no such heading in {path}"
    for url in (link for link in links if link.startswith("http")):
        assert url.startswith("https://"), url
