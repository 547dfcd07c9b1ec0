"""``.ci/run`` runs the README's test command exactly as the README writes it."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- ci: the test command -->"


def readme_test_command(readme: str) -> str:
    """The bash block after the marker line, read here independently of ``.ci/run``'s awk."""
    lines = readme.splitlines()
    start = lines.index(MARKER) + 1
    assert lines[start] == "```bash", "the marker must stand right above the test command's block"
    end = lines.index("```", start + 1)
    return "\n".join(lines[start + 1:end])


def ci_run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / ".ci" / "run"), *args], capture_output=True, text=True, timeout=60)


def test_ci_runs_the_readme_quickstart_test_command():
    readme = (ROOT / "README.md").read_text()
    assert readme.count(MARKER) == 1
    command = readme_test_command(readme)
    quickstart = readme[readme.index("## Quickstart"):readme.index("\n## ", readme.index("## Quickstart") + 1)]
    assert MARKER in quickstart and command.endswith(".venv/bin/pytest")
    out = ci_run(ROOT, "--print")
    assert out.returncode == 0 and out.stdout == command + "\n", out.stdout


def copy_with_readme(tmp_path: Path, readme: str) -> Path:
    (tmp_path / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "README.md").write_text(readme)
    return tmp_path


def test_ci_fails_on_an_empty_suite_and_passes_the_status_on(tmp_path):
    for status, expect in [(0, 0), (3, 3), (5, 1)]:
        repo = copy_with_readme(tmp_path / str(status), f"# x\n\n{MARKER}\n```bash\necho ran; exit {status}\n```\n")
        out = ci_run(repo)
        assert out.returncode == expect and "ran" in out.stdout, out.stdout
        assert ("collected no tests" in out.stdout) == (status == 5)
    repo = copy_with_readme(tmp_path / "none", "# no marker\n```bash\npytest\n```\n")
    out = ci_run(repo)
    assert out.returncode == 1 and "README.md has no bash block after the line" in out.stdout
