"""The serving engine and the jobs know no HTTP and no command line (as in infinity and TEI):
only `baihua.app` (the HTTP layer) and `baihua.cli` may import fastapi, starlette or typer, and
packages import one way: core ← encoder, whitening, index ← eval, serving ← jobs ← app, cli."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("fastapi", "starlette", "typer")
FRONT_ENDS = {"app", "cli"}
# what each package may import of baihua (besides itself)
ALLOWED = {
    "core": set(),
    "configs": set(),
    "encoder": {"core"},
    "whitening": {"core"},
    "index": {"core"},
    "eval": {"core", "configs", "encoder", "whitening", "index"},
    "serving": {"core", "configs", "encoder", "whitening", "index"},
    "jobs": {"core", "configs", "encoder", "whitening", "index", "serving"},
    "app": {"core", "configs", "encoder", "whitening", "index", "serving"},
    "cli": {"core", "configs", "encoder", "whitening", "index", "eval", "serving", "jobs", "app"},
}


def package_folders() -> dict[str, Path]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {
        name.removeprefix("baihua."): ROOT / folder
        for name, folder in setuptools["package-dir"].items()
    }


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_every_package_has_its_rule() -> None:
    assert set(package_folders()) == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    folder = package_folders()[package]
    wrong = []
    for path in sorted(folder.rglob("*.py")):
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in FRAMEWORKS and package not in FRONT_ENDS:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
            if top == "baihua" and module.count(".") >= 1:
                target = module.split(".")[1]
                if target != package and target not in ALLOWED[package]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []


def test_engine_and_jobs_load_no_http_or_cli_framework() -> None:
    """Import every module of the libraries, the serving engine and the jobs in a fresh
    interpreter: none of fastapi, starlette or typer may be loaded, even indirectly."""
    modules = []
    for package, folder in package_folders().items():
        if package in FRONT_ENDS:
            continue
        modules.append(f"baihua.{package}")
        for info in pkgutil.walk_packages([str(folder)], prefix=f"baihua.{package}."):
            modules.append(info.name)
    assert "baihua.serving.service" in modules and "baihua.jobs.fit" in modules
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
