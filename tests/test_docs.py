"""The measured-results documents cannot drift from their data: they are what the generator makes of
the committed result files, byte for byte, and they speak to users, not to the tracker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return report.generate()


@pytest.mark.parametrize("name", report.DOCS)
def test_committed_doc_is_generated_from_committed_results(generated: dict[str, str], name: str) -> None:
    committed = (ROOT / "docs" / name).read_text()
    assert committed == generated[name], f"docs/{name} is stale: run `python -m benchmarks.report` and commit it"


DOC_FILES = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "docs" / "_templates").glob("*.md"))


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_docs_name_no_issue_numbers(path: Path) -> None:
    assert not re.search(r"issue \d+", path.read_text(), re.IGNORECASE)


def test_generated_docs_have_no_unfilled_placeholders(generated: dict[str, str]) -> None:
    for name, text in generated.items():
        assert "{{" not in text, name


def test_every_section_of_the_templates_has_its_results() -> None:
    """The report drops a section whose benchmark has no renderer or no results file, so that a new
    benchmark's section appears once it is measured; every section of the committed templates is."""
    for name in report.DOCS:
        for module in report.modules_in((report.TEMPLATES / name).read_text()):
            assert report.section(module).parts is not None, f"{name}: benchmarks.{module} renders nothing"


def test_a_section_without_results_is_left_out_whole() -> None:
    template = ("# Doc\n\nintro\n\n## Kept\n\n{{here}}\n\n## Gone\n\nprose\n\n{{absent}}\n\n### Sub\n\nmore\n\n"
                "## Next\n\nend\n")
    sections = {"here": report.Section("here", "TABLE", []), "absent": report.Section("absent", None, [])}
    out = report.fill(template, sections, None)
    assert out == "# Doc\n\nintro\n\n## Kept\n\nTABLE\n\n## Next\n\nend\n"


def test_parts_and_the_summary_fill_their_placeholders() -> None:
    sections = {"solvers": report.Section("solvers", {"exact": "E", "model": "M"}, [])}
    out = report.fill("## A\n\n{{solvers:exact}}\n\n## B\n\n{{solvers:model}}\n\n{{summary}}\n", sections, "S")
    assert out == "## A\n\nE\n\n## B\n\nM\n\nS\n"


def test_the_readme_is_a_manual_whose_results_table_is_the_generated_summary():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert not re.search(r"issue \d+|#\d{2,}", readme, re.I)
    summary = [line for line in (ROOT / "docs" / "summary.md").read_text().splitlines() if line.startswith("|")]
    results = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    assert [line for line in results.splitlines() if line.startswith("|")] == summary
