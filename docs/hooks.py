"""MkDocs hook: pages show what the code holds, from the code, where they ask (one copy each).

Markers are HTML comments, invisible on GitHub; the site replaces them:

* ``<!-- profile-table: paper fusion.recipes.agw -->``: that table of
  ``common/profiles/paper.toml`` as it is in the repository, source comments and all;
* ``<!-- modifiers-table -->``: every ablation modifier of the method registry
  (:data:`stage2_fusion.methods.METHODS`), with the methods that accept it and its summary;
* ``<!-- commands-table -->``: every ``pipeline`` command with the first line of its help.

A table that is not there fails the build (``mkdocs build --strict`` runs in the test suite).
"""

from __future__ import annotations

import re
from pathlib import Path

PROFILES = Path(__file__).resolve().parents[1] / "common" / "profiles"
MARKER = re.compile(r"<!-- profile-table: ([\w-]+) ([\w.-]+) -->")


def profile_table(profile: str, table: str) -> str:
    """The lines of ``[table]`` in ``common/profiles/<profile>.toml``: its header, keys and
    comments up to the next table header, trailing blank lines dropped.

    Raises:
        ValueError: no such profile, or no such table in it.
    """
    path = PROFILES / f"{profile}.toml"
    if not path.is_file():
        raise ValueError(f"profile-table: {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = re.compile(rf"^\[{re.escape(table)}\](\s|#|$)")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        raise ValueError(f"profile-table: {path} has no table [{table}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    body = lines[start:end]
    while body and not body[-1].strip():
        body.pop()
    return "\n".join(body)


def modifiers_table() -> str:
    """A Markdown table of every modifier in the method registry: name, the methods that
    accept it, its one-line summary (one row per distinct summary)."""
    from stage2_fusion.methods import METHODS

    rows: dict[tuple[str, str], list[str]] = {}
    for method, spec in METHODS.items():
        for modifier in spec.modifiers.values():
            rows.setdefault((modifier.name, modifier.summary), []).append(method)
    lines = ["| modifier | accepted by | what it changes |", "|---|---|---|"]
    lines += [f"| `{name}` | {', '.join(methods)} | {summary.replace('|', '/')} |"
              for (name, summary), methods in sorted(rows.items())]
    return "\n".join(lines)


def commands_table() -> str:
    """A Markdown table of the ``pipeline`` commands and the first line of each one's help."""
    import typer.main

    from pipelines.cli import app

    group = typer.main.get_command(app)
    lines = ["| command | what it does |", "|---|---|"]
    for name, command in group.commands.items():
        first = (command.help or "").strip().splitlines()[0] if command.help else ""
        lines.append(f"| `pipeline {name}` | {first.replace('|', '/')} |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the markers of a page (see the module docstring)."""
    def block(match: re.Match) -> str:
        profile, table = match.groups()
        return f"```toml title=\"common/profiles/{profile}.toml\"\n{profile_table(profile, table)}\n```"

    markdown = MARKER.sub(block, markdown)
    if "<!-- modifiers-table -->" in markdown:
        markdown = markdown.replace("<!-- modifiers-table -->", modifiers_table())
    if "<!-- commands-table -->" in markdown:
        markdown = markdown.replace("<!-- commands-table -->", commands_table())
    return markdown
