"""The method map (`docs/method-map.md`) against the library it describes.

Every table row of the page is one method. The checks: each row fills every column and names its contrast type
with one of the page's four words; every import path written on the page imports; every recipe named exists in
`trainers/`, is the file the packaged-recipe lookup finds, and loads with its overrides (which then hold in the
loaded recipe); every relative link reaches a file or folder and, for Markdown targets, a heading (GitHub-style
anchors); every decimal figure in a "Measured" cell is written in the README section or the module docstring
that cell links to; rows marked "not yet in the library" name no class and no recipe.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest
import yaml

from hf_contrastive.core.recipes import recipe_path
from hf_contrastive.core.utils import resource_dir
from hf_contrastive.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "method-map.md"
COLUMNS = [
    "Method",
    "Contrast",
    "Positives from",
    "Negatives from",
    "Shared across devices",
    "Classes",
    "Recipe",
    "Measured",
    "Pick it when",
]
CONTRAST_TYPES = ("input-input", "input-label", "both", "neither")
FAMILIES = (
    "Sentence embeddings",
    "Retrieval and reranking",
    "Decoding",
    "Faithfulness",
    "Relation extraction",
    "Vision-language",
    "Dense and pixel",
    "Continual learning",
)
NOT_YET = "not yet in the library"
# A few methods of each wing, and the three methods of issue 17 (COCONUT, ReCAT, Vega v1).
SEED_METHODS = (
    "SimCSE",
    "Contriever",
    "Contrastive search",
    "TKRE",
    "CLIP",
    "PixPro",
    "COCONUT",
    "ReCAT",
    "Vega",
)

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
RECIPE_LINK = re.compile(r"\[[^\]]*\]\(\.\./trainers/([\w.-]+)\.yaml\)")
IMPORT_PATH = re.compile(r"`(hf_contrastive(?:\.\w+)+)`")
CODE = re.compile(r"`([^`]+)`")
DECIMAL = re.compile(r"\d+\.\d+")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _headings(text: str) -> list[tuple[int, int, str]]:
    """`(line index, level, title)` of the Markdown headings of `text`, fenced code blocks left out."""
    found, fenced = [], False
    for i, line in enumerate(text.splitlines()):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            found.append((i, len(match.group(1)), match.group(2)))
    return found


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    title = LINK.sub(lambda m: m.group(0)[1 : m.group(0).index("]")], title)
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(text: str) -> dict[str, str]:
    """Anchor -> text of its section (up to the next heading of the same or a higher level)."""
    lines, heads, seen, out = text.splitlines(), _headings(text), Counter(), {}
    for n, (start, level, title) in enumerate(heads):
        base = github_anchor(title)
        anchor = base if not seen[base] else f"{base}-{seen[base]}"
        seen[base] += 1
        end = next((s for s, lv, _ in heads[n + 1 :] if lv <= level), len(lines))
        out[anchor] = "\n".join(lines[start:end])
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def method_rows() -> list[dict[str, str]]:
    """One dict per table row of the page (column -> cell), with the `section` it is under."""
    rows, section, header = [], "", None
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        match = HEADING.match(line)
        if match:
            section, header = match.group(2), None
        elif not line.startswith("|"):
            header = None
        elif header is None:
            header = _cells(line)
        elif not set(line.replace("|", "").strip()) <= {"-", ":", " "}:
            cells = _cells(line)
            assert header == COLUMNS, f"table under {section!r} has columns {header}"
            assert len(cells) == len(COLUMNS), f"row {cells[0]!r} has {len(cells)} cells, not {len(COLUMNS)}"
            rows.append({"section": section, **dict(zip(COLUMNS, cells))})
    return rows


def recipe_uses() -> list[tuple[str, list[str]]]:
    """`(recipe name, overrides)` for every recipe link of a Recipe cell; overrides are the backticked
    `--section.key value` texts between that link and the next one."""
    uses = []
    for row in method_rows():
        cell = row["Recipe"]
        links = list(RECIPE_LINK.finditer(cell))
        for n, link in enumerate(links):
            tail = cell[link.end() : links[n + 1].start() if n + 1 < len(links) else len(cell)]
            overrides = [
                tok for code in CODE.findall(tail) if code.startswith("--") for tok in shlex.split(code)
            ]
            uses.append((link.group(1), overrides))
    return uses


def _resolve(path: str):
    """The object an import path names: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


def _link_text(target: str) -> str:
    """What a Measured cell's link points to: a Markdown section, or a Python module's docstring."""
    path, _, anchor = target.partition("#")
    file = (PAGE.parent / path).resolve()
    if file.suffix == ".py":
        return ast.get_docstring(ast.parse(file.read_text(encoding="utf-8"))) or ""
    text = file.read_text(encoding="utf-8")
    return anchors(text)[anchor] if anchor else text


def test_page_covers_every_family_and_the_issue_17_methods():
    rows = method_rows()
    sections = {row["section"] for row in rows}
    assert set(FAMILIES) <= sections, set(FAMILIES) - sections
    names = " ".join(row["Method"] for row in rows)
    for method in SEED_METHODS:
        assert method in names, method
    assert len({row["Method"] for row in rows}) == len(rows), "a method has two rows"


def test_every_row_is_filled_and_typed():
    for row in method_rows():
        assert all(row[c] for c in COLUMNS), row
        assert row["Contrast"].startswith(CONTRAST_TYPES), (row["Method"], row["Contrast"])
        if NOT_YET in row["Classes"]:
            assert not IMPORT_PATH.search(row["Classes"]), row["Method"]
            assert row["Recipe"] == "none", row["Method"]
        else:
            assert IMPORT_PATH.search(row["Classes"]), f"{row['Method']}: no class named"
        if not row["Recipe"].startswith("none"):
            assert RECIPE_LINK.search(row["Recipe"]), f"{row['Method']}: recipe cell without a recipe link"


@pytest.mark.parametrize("path", sorted(set(IMPORT_PATH.findall(PAGE.read_text(encoding="utf-8")))))
def test_every_import_path_imports(path):
    assert _resolve(path) is not None


@pytest.mark.parametrize("name, overrides", recipe_uses(), ids=[" ".join([n, *o]) for n, o in recipe_uses()])
def test_every_recipe_exists_and_loads(name, overrides):
    file = ROOT / "trainers" / f"{name}.yaml"
    assert file.is_file(), file
    assert recipe_path(name).resolve() == (resource_dir("recipes") / file.name).resolve()
    recipe = load_recipe(name, overrides)
    for flag, value in zip(overrides[::2], overrides[1::2]):
        section, key = flag[2:].split(".", 1)
        if "${" not in value:
            assert recipe[section][key] == yaml.safe_load(value), (flag, recipe[section].get(key))


def test_every_relative_link_resolves():
    text = PAGE.read_text(encoding="utf-8")
    own = anchors(text)
    targets = [t for t in LINK.findall(text) if not t.startswith(("http://", "https://", "mailto:"))]
    assert targets
    for target in targets:
        path, _, anchor = target.partition("#")
        if not path:
            assert anchor in own, f"#{anchor} is no heading of the page"
            continue
        file = (PAGE.parent / path).resolve()
        assert file.exists(), f"{target}: {file} does not exist"
        if anchor:
            assert file.suffix == ".md", f"{target}: anchor into a file that is not Markdown"
            assert anchor in anchors(file.read_text(encoding="utf-8")), f"{target}: no such heading"


def test_measured_figures_are_quoted_from_their_source():
    quoted = 0
    for row in method_rows():
        cell = row["Measured"]
        figures = DECIMAL.findall(cell)
        if not figures:
            continue
        links = LINK.findall(cell)
        assert links, f"{row['Method']}: figures without a link to where they come from"
        source = "\n".join(_link_text(t) for t in links)
        missing = [f for f in figures if f not in source]
        assert not missing, f"{row['Method']}: {missing} not in {links}"
        quoted += 1
    assert quoted >= 5
