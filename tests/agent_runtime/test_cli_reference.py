"""docs/cli.md is the reference rendered from the current argument parser."""

from __future__ import annotations

from pathlib import Path

from agent_runtime.cli import build_parser
from agent_runtime.cli_reference import render_cli_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_docs_cli_md_is_current():
    fresh = render_cli_reference(build_parser())
    assert DOC.is_file() and DOC.read_text() == fresh, (
        "docs/cli.md is out of date with the argument parser; regenerate it with "
        "`.venv/bin/python -m agent_runtime.cli_reference > docs/cli.md` and commit the result")


def test_reference_names_every_subcommand_and_flag():
    fresh = render_cli_reference(build_parser())
    for text in ("## agent-runtime serve", "## agent-runtime bench", "`--concurrency N[,N...]`", "`--no-mcp`"):
        assert text in fresh
