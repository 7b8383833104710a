"""The expand phase's SQL, linted with squawk before bake and deploy: nothing in it may break the
version that still serves while it runs.

Layout under `deploy.migrations.sql` (a directory inside the repository):

    expand/*.sql      run before the new version takes traffic: additive only
    contract/*.sql    run once no old container runs: drops and renames belong here

squawk (the `squawk-cli` package from PyPI, a single binary) parses each file as PostgreSQL and
reports rules by name. Only the rules that break a reader or writer of the old schema refuse an
expand file; squawk's advice about lock timeouts and the like is not a reason to stop a deploy.
Contract files are not linted for these rules: that is where they belong.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from imagebuild.errors import UserError

SQUAWK_TIMEOUT = 60        # seconds for one run over every expand file
# squawk rule -> what it means for the version still serving.
BREAKING_RULES = {
    "ban-drop-column": "DROP COLUMN: the serving version still reads it",
    "ban-drop-table": "DROP TABLE: the serving version still reads it",
    "renaming-column": "RENAME COLUMN: the serving version still uses the old name",
    "renaming-table": "RENAME TABLE: the serving version still uses the old name",
    "changing-column-type": "a column type change: the serving version reads and writes the old type",
    "adding-required-field": "NOT NULL without a default: the serving version's inserts do not fill it",
    "adding-not-nullable-field": "SET NOT NULL: the serving version's inserts may leave it empty",
    "syntax-error": "not valid SQL",
}
MOVE_HINT = "move it to contract/ (it runs once no old container serves), or make the change additive"


@dataclass(frozen=True)
class Finding:
    file: str          # relative to the recipe's directory
    line: int          # 1-based
    rule: str
    meaning: str

    def line_text(self) -> str:
        return f"{self.file}:{self.line}: {self.meaning} ({self.rule}) in the expand phase"


def expand_files(root: Path, sql_dir: str) -> list[Path]:
    return sorted((root / sql_dir / "expand").glob("*.sql"))


def squawk_binary() -> str:
    """squawk beside this Python (a venv's bin/) first, then on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file():
        return str(beside)
    found = shutil.which("squawk")
    if not found:
        raise UserError("deploy.migrations.sql needs squawk, which is not installed",
                        hint="pip install 'imagebuild[sql]' (the squawk-cli package)")
    return found


def lint_expand(root: Path, sql_dir: str) -> list[Finding]:
    """Every breaking finding in expand/*.sql, in file and line order."""
    files = expand_files(root, sql_dir)
    if not files:
        return []
    relative = [str(path.relative_to(root)) for path in files]
    try:
        done = subprocess.run([squawk_binary(), "--reporter", "json", "--", *relative], cwd=root,
                              capture_output=True, text=True, timeout=SQUAWK_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"squawk did not finish linting {sql_dir}/expand within {SQUAWK_TIMEOUT} s") from exc
    try:
        reports = json.loads(done.stdout or "[]")
    except ValueError as exc:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"squawk could not lint {sql_dir}/expand (exit {done.returncode}): {said}") from exc
    findings = {Finding(str(report.get("file")), int(report.get("line") or 0) + 1, report.get("rule_name"),
                        BREAKING_RULES[report.get("rule_name")])
                for report in reports if report.get("rule_name") in BREAKING_RULES}
    return sorted(findings, key=lambda f: (f.file, f.line, f.rule))


def refuse_breaking_expand(root: Path, sql_dir: str | None) -> None:
    """One line naming the first breaking statement (and how many more), exit 2."""
    if sql_dir is None:
        return
    findings = lint_expand(root, sql_dir)
    if findings:
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise UserError(findings[0].line_text() + more, hint=MOVE_HINT)
