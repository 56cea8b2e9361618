"""`herald status` told nothing looks where `scripts/run` serves the services, as the README's table shows them."""

from __future__ import annotations

import re

import pytest

from herald_shared.cli import CliError, build_parser, installed_services, run_layout
from tests.conftest import ROOT


def readme_table_layout() -> list[str]:
    """NAME=PORT of each row of the README's table of what runs where."""
    block = re.search(r"```text\n(service .*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README shows the table scripts/run prints"
    rows = [line.split() for line in block.group(1).strip().splitlines()[1:]]
    return [f"{name}={url.rsplit(':', 1)[1]}" for name, url, *_ in rows]


def test_bare_status_is_a_valid_command() -> None:
    assert build_parser().parse_args(["status"]).services == []


def test_the_default_layout_is_the_readmes_table() -> None:
    """Every service folder is installed, in folder order from 8081: what scripts/run starts and prints."""
    folders = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))
    assert installed_services() == folders
    assert run_layout(installed_services(), {}) == readme_table_layout()


def test_the_default_layout_follows_the_base_port_scripts_run_uses() -> None:
    assert run_layout(["billing", "campaigns"], {"HERALD_RUN_BASE_PORT": "48281"}) == ["billing=48281",
                                                                                     "campaigns=48282"]
    with pytest.raises(CliError, match="HERALD_RUN_BASE_PORT"):
        run_layout(["billing"], {"HERALD_RUN_BASE_PORT": "eighty"})
