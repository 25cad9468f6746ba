"""What the shipped code imports is what pyproject.toml declares (statically; tests/test_install.py proves it live).

`pip install .` installs the declared dependencies and nothing else, so a module
that is imported but only arrives as somebody else's dependency (or a dev extra)
is a production install that cannot start.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata as metadata
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [*sorted((ROOT / "app").rglob("*.py")), *sorted((ROOT / "simulators").rglob("*.py")),
           ROOT / "manage.py", ROOT / "migrations" / "env.py"]
# Modules the server loads by name rather than by an import in our code: gunicorn's gevent worker
# (app/server.py: worker_class "gevent") and the PostgreSQL driver SQLAlchemy picks from DATABASE_URL.
LOADED_BY_NAME = {"gunicorn.workers.ggevent": "worker_class gevent", "psycopg": "postgresql+psycopg:// URLs"}
LOCAL = {"app", "simulators", "demo", "tests"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(path: Path, module_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if not module_level_only else _module_level(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _module_level(tree: ast.Module):
    """Statements run on import: the module body and its try/if blocks, not function bodies."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.Try, ast.If)):
            stack.extend([*node.body, *node.orelse, *getattr(node, "finalbody", []),
                          *(s for h in getattr(node, "handlers", []) for s in h.body)])


def third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m not in LOCAL and m != "__future__"}


@functools.cache
def _owners() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distribution_of(module: str) -> str:
    owners = _owners().get(module)
    assert owners, f"no installed distribution provides the module '{module}'"
    return canonical(owners[0])


def declared() -> set[str]:
    """pyproject's dependencies, with what their requested extras pull in (gunicorn[gevent] → gevent, packaging)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for line in project["dependencies"]:
        requirement = Requirement(line)
        names.add(canonical(requirement.name))
        for extra in requirement.extras:
            for pulled in metadata.requires(requirement.name) or []:
                dependency = Requirement(pulled)
                if dependency.marker is not None and dependency.marker.evaluate({"extra": extra}):
                    names.add(canonical(dependency.name))
    return names


def needed() -> dict[str, str]:
    """Distribution -> where its import comes from."""
    wanted: dict[str, str] = {}
    for path in SHIPPED:
        for module in third_party(imported_modules(path)):
            wanted.setdefault(distribution_of(module), str(path.relative_to(ROOT)))
    for name, why in LOADED_BY_NAME.items():
        origin = importlib.util.find_spec(name).origin
        modules = {name.split(".")[0]} | third_party(imported_modules(Path(origin), module_level_only=True))
        for module in modules:
            wanted.setdefault(distribution_of(module), f"{name} ({why})")
    return wanted


def test_every_runtime_import_is_a_declared_dependency():
    missing = {dist: where for dist, where in needed().items() if dist not in declared()}
    assert not missing, f"imported but not declared in pyproject.toml [project] dependencies: {missing}"


def test_the_gevent_worker_plugin_is_inspected():
    """The check reads the worker gunicorn loads by name: its `packaging` import is what broke `pip install .`."""
    worker = Path(importlib.util.find_spec("gunicorn.workers.ggevent").origin)
    assert {"gevent", "packaging"} <= third_party(imported_modules(worker, module_level_only=True))
    assert {"gevent", "gunicorn", "packaging", "psycopg"} <= set(needed())


def test_nothing_in_app_imports_the_dev_extras():
    dev = {canonical(Requirement(r).name) for r in
           tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]}
    used = {distribution_of(m) for path in SHIPPED for m in third_party(imported_modules(path))}
    assert not (used & dev), f"the shipped code imports dev-only packages: {used & dev}"
