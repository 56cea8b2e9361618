"""The install step of `deploy/images/Dockerfile`, run for real: for each service, the same `uv sync` (the lock,
no development dependencies, the project installed rather than linked) into an empty environment, which then
holds the service's console script and imports its entry point, without the test tools. What Docker adds on top
(the base image, the user, the copy into the final stage) is checked in tests/unit/deploy/test_images.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.deploy.helpers import BUILD, ROOT, SERVICES


def uv() -> str:
    """The uv scripts/lib.sh installs (the test command runs it first), or one on PATH."""
    cache = Path(os.environ.get("HERALD_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "herald")
    found = cache / "tools/bin/uv"
    path = str(found) if found.exists() else shutil.which("uv")
    assert path, "uv not found: scripts/test installs it"
    return path


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_install_step_gives_the_service_and_nothing_for_development(service: str, tmp_path: Path) -> None:
    [step] = [c for c in BUILD.all("RUN") if "uv sync" in c]
    sync = re.search(r"uv sync (.*?) --python \S+", step)
    assert sync, step
    flags = sync.group(1).replace("${SERVICE}", service).replace('"', "").split()
    environment = tmp_path / "opt-herald"
    done = subprocess.run([uv(), "sync", *flags, "--python", "python3.11", "--quiet"], cwd=ROOT,
                          env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(environment), "UV_LINK_MODE": "copy"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (environment / "bin" / f"herald-{service}").exists()
    python = environment / "bin/python"
    imported = subprocess.run([python, "-c", f"import herald_{service}.main as m; print(callable(m.main))"],
                              capture_output=True, text=True, timeout=120)
    assert imported.stdout.strip() == "True", imported.stderr
    # installed, not linked to the working tree: the image has no /src
    origin = subprocess.run([python, "-c", f"import herald_{service}; print(herald_{service}.__file__)"],
                            capture_output=True, text=True, timeout=60).stdout
    assert origin.startswith(str(environment)), origin
    for tool in ("pytest", "mypy", "ruff", "hypothesis"):
        absent = subprocess.run([python, "-c", f"import {tool}"], capture_output=True, timeout=60)
        assert absent.returncode != 0, f"{tool} is in the {service} image"
