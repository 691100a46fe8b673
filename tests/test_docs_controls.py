"""The control-coverage tables (docs/controls.md, docs/controls.nl.md) stay true.

Every test a table cites as proof must exist: the tests are read with `ast` (no collection, no
imports), so renaming or deleting a cited test fails here at once. Both languages list the same
clauses with the same proofs, and every clause the tables promise is there.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TABLES = {"en": ROOT / "docs" / "controls.md", "nl": ROOT / "docs" / "controls.nl.md"}

# the clauses the tables cover: NIST SP 800-53 Rev. 5 (PS-4 f is Rev. 4's sixth part) and
# ISO/IEC 27001:2022 Annex A
CONTROLS = {
    *(f"PS-4 {part}" for part in "abcdef"),
    "PS-4(2)",
    *(f"AC-2(3) {part}" for part in "abcd"),
    "AC-3(2)",
    "AC-5 a",
    "AC-5 b",
    "A.5.18",
    "A.6.5",
    "A.8.15",
}
NODE_ID = re.compile(r"`(tests/[\w/]+\.py::[\w:]+(?:\[[^\]`]*\])?)`")
NO_PROOF = "—"
COLUMNS = 5  # clause | in short | what the service does | proved by | gap


@dataclass(frozen=True)
class Row:
    control: str
    cells: tuple[str, ...]
    line: int

    @property
    def proofs(self) -> tuple[str, ...]:
        return tuple(NODE_ID.findall(self.cells[3]))


def rows_of(text: str) -> list[Row]:
    """The body rows of every table: the header and its `|---|` line are skipped."""
    rows = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        following = lines[number] if number < len(lines) else ""
        if following.startswith("|") and set(following) <= set("|-: "):
            continue  # a header row
        cells = tuple(cell.strip() for cell in line.strip().strip("|").split(" | "))
        rows.append(Row(cells[0], cells, number))
    return rows


@cache
def defined_tests(path: Path) -> frozenset[str]:
    """The node ids (without parameters) a test module defines: `test_*` functions and
    `test_*` methods of `Test*` classes, including those of base classes in the same module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}

    def methods(cls: ast.ClassDef, seen: frozenset[str] = frozenset()) -> set[str]:
        own = {
            node.name
            for node in cls.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test")
        }
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in classes and base.id not in seen:
                own |= methods(classes[base.id], seen | {cls.name})
        return own

    found = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }
    for name, cls in classes.items():
        if name.startswith("Test"):
            found |= {f"{name}::{method}" for method in methods(cls)}
    return frozenset(found)


def missing_tests(node_ids: set[str], root: Path = ROOT) -> list[str]:
    """The cited node ids no test module defines, each with why."""
    missing = []
    modules: dict[str, frozenset[str] | None] = {}
    for node_id in sorted(node_ids):
        path, _, name = node_id.partition("::")
        name = name.split("[", 1)[0]  # a parametrised test may be cited with or without its case
        if path not in modules:
            file = root / path
            modules[path] = defined_tests(file) if file.is_file() else None
        defined = modules[path]
        if defined is None:
            missing.append(f"{node_id}: no file {path}")
        elif name not in defined:
            missing.append(f"{node_id}: {path} defines no test {name!r}")
    return missing


@pytest.fixture(scope="module")
def tables() -> dict[str, list[Row]]:
    return {language: rows_of(path.read_text()) for language, path in TABLES.items()}


@pytest.mark.parametrize("language", sorted(TABLES))
def test_every_cited_test_exists(tables: dict[str, list[Row]], language: str) -> None:
    cited = {proof for row in tables[language] for proof in row.proofs}
    assert len(cited) >= 20, f"{TABLES[language].name}: the parser found too few tests: {cited}"
    assert missing_tests(cited) == []


@pytest.mark.parametrize("language", sorted(TABLES))
def test_every_clause_is_listed_once_with_all_its_columns(
    tables: dict[str, list[Row]], language: str
) -> None:
    rows = tables[language]
    name = TABLES[language].name
    controls = [row.control for row in rows]
    assert sorted(set(controls)) == sorted(controls), f"{name}: a clause is listed twice"
    assert set(controls) == CONTROLS, f"{name}: {set(controls) ^ CONTROLS}"
    for row in rows:
        assert len(row.cells) == COLUMNS, f"{name}:{row.line}: {len(row.cells)} columns"
        assert all(row.cells), f"{name}:{row.line}: an empty cell"
        # a clause without a test says so with a dash, never with an empty or vague cell
        assert row.proofs or row.cells[3] == NO_PROOF, f"{name}:{row.line}: {row.cells[3]}"


def test_both_languages_cite_the_same_tests_for_each_clause(
    tables: dict[str, list[Row]],
) -> None:
    english = {row.control: set(row.proofs) for row in tables["en"]}
    dutch = {row.control: set(row.proofs) for row in tables["nl"]}
    assert english == dutch


def test_a_renamed_or_removed_test_is_reported(tmp_path: Path) -> None:
    module = tmp_path / "tests" / "flows" / "test_example.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "import pytest\n\n"
        "def test_kept():\n    pass\n\n"
        "@pytest.mark.parametrize('x', [1])\ndef test_param(x):\n    pass\n\n"
        "class TestBase:\n    def test_inherited(self):\n        pass\n\n"
        "class TestChild(TestBase):\n    def test_own(self):\n        pass\n"
    )
    present = {
        "tests/flows/test_example.py::test_kept",
        "tests/flows/test_example.py::test_param",
        "tests/flows/test_example.py::test_param[1]",
        "tests/flows/test_example.py::TestChild::test_own",
        "tests/flows/test_example.py::TestChild::test_inherited",
    }
    assert missing_tests(present, tmp_path) == []
    assert missing_tests({"tests/flows/test_example.py::test_renamed"}, tmp_path) == [
        "tests/flows/test_example.py::test_renamed: tests/flows/test_example.py "
        "defines no test 'test_renamed'"
    ]
    assert missing_tests({"tests/flows/test_gone.py::test_kept"}, tmp_path) == [
        "tests/flows/test_gone.py::test_kept: no file tests/flows/test_gone.py"
    ]
    table = "| Clause | Proof |\n|---|---|\n| PS-4 a | `tests/flows/test_example.py::test_x` |\n"
    assert [row.control for row in rows_of(table)] == ["PS-4 a"]


def test_the_readme_links_to_the_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/controls.md)" in readme
    assert "(controls.nl.md)" in TABLES["en"].read_text()
    assert "(controls.md)" in TABLES["nl"].read_text()
