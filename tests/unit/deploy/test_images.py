"""The service images, checked without a Docker engine (none runs here): `deploy/images/Dockerfile` is read as
the builder would read it, and what it relies on is checked against the repository (files it copies, the lock it
installs from, the console script each service really has)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.unit.deploy.helpers import ARGS, BUILD, FINAL, ROOT, SERVICES, STAGES


def resolve(image: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: ARGS.get(m.group(1), m.group(0)), image)


def test_the_image_is_built_in_stages_on_the_slim_python_311_base() -> None:
    assert len(STAGES) >= 2 and BUILD.name == "build"
    for stage in STAGES:
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", resolve(stage.image)), stage.image


def test_the_final_stage_has_no_build_tools_and_takes_only_the_built_environment() -> None:
    for command in FINAL.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|pip|uv|gcc|make|curl|wget)\b", command), command
    copies = FINAL.all("COPY")
    assert copies and all(c.startswith("--from=build ") for c in copies), copies


def test_the_final_stage_runs_as_an_unprivileged_user_and_writes_no_bytecode() -> None:
    [user] = FINAL.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 10000 and (not gid or int(gid) >= 10000)  # numeric: runAsNonRoot checks it
    env = " ".join(FINAL.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # a read-only root filesystem: nothing written next to the code
    assert "UV_COMPILE_BYTECODE=1" in " ".join(BUILD.all("ENV"))  # compiled at build time instead


def test_every_file_the_build_copies_exists_and_reaches_the_build_context() -> None:
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert ignore[0] == "*"  # everything else stays out of the context (caches, .venv, .stack, .git)
    for copy in BUILD.all("COPY"):
        *sources, _ = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


def test_dependencies_come_from_the_lock_without_development_tools() -> None:
    [sync] = [c for c in BUILD.all("RUN") if "uv sync" in c]
    for flag in ("--frozen", "--no-dev", "--no-editable", '--package "herald-${SERVICE}"'):
        assert flag in sync, flag
    uv_version = re.search(r'^UV_VERSION="([^"]+)"', (ROOT / "scripts/lib.sh").read_text(), re.M)
    assert uv_version and f"UV_VERSION={uv_version.group(1)}" in BUILD.all("ARG")  # the uv that wrote uv.lock


@pytest.mark.parametrize("service", SERVICES)
def test_the_entrypoint_is_the_console_script_the_service_has(service: str) -> None:
    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())["project"]
    assert project["name"] == f"herald-{service}"
    target = project["scripts"][f"herald-{service}"]  # what `herald-${SERVICE}` is in the image
    module, _, function = target.partition(":")
    source = ROOT / "services" / service / Path(*module.split(".")).with_suffix(".py")
    assert re.search(rf"^def {function}\(\) -> None:", source.read_text(), re.M), target
    [sync] = [c for c in BUILD.all("RUN") if "uv sync" in c]
    assert 'ln -s "herald-${SERVICE}" /opt/herald/bin/herald-service' in sync
    assert FINAL.all("ENTRYPOINT") == ['["/opt/herald/bin/herald-service"]']


def test_the_service_listens_on_every_interface_at_the_exposed_port() -> None:
    env = " ".join(FINAL.all("ENV"))
    assert "HERALD_HTTP_HOST=0.0.0.0" in env  # the default, 127.0.0.1, is unreachable from the pod's network
    settings = (ROOT / "shared/herald_shared/settings.py").read_text()
    port = re.search(r'http_port: int = Field\(default=(\d+), alias="HERALD_HTTP_PORT"\)', settings)
    assert port and FINAL.all("EXPOSE") == [port.group(1)]
