"""The import direction of docs/ARCHITECTURE.md, checked on the AST of every module.

Allowed: server → models → kernels, distill → models → kernels, server → client's shared
torch-free modules (the wire protocol and the media writer). Never models / kernels / distill →
client / server, never client → any other package, and no client module imports torch. Imports
inside functions count too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "models", "distill", "server", "client")

# package -> the packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "kernels": set(),
    "models": {"kernels"},
    "distill": {"models", "kernels"},
    "server": {"models", "kernels", "client"},
    "client": set(),
}
# the only client modules another package may import: torch-free, shared by both ends of the wire
CLIENT_SHARED = ("client.protocol", "client.mp4_writer", "client.audio_file")
# modules no package may import (the `framecast` shell loads subcommands by name; nothing imports it)
NOBODY_IMPORTS = ("client.cli", "client.bench_cli")
# packages whose modules must never import torch (the SDK runs where torch is not installed)
TORCH_FREE = ("client",)


def imported_modules(path: Path, package_root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parts = list(path.relative_to(package_root).with_suffix("").parts)
    here = parts[:-1]  # the package a relative import starts from (for a/b.py and a/__init__.py alike)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here[: len(here) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from a.b import c` may import module a.b.c or name c of a.b: a.b.c covers both
            out += [(node.lineno, module if alias.name == "*" else f"{module}.{alias.name}") for alias in node.names]
    return out


def violations(root: Path) -> list[str]:
    """Every import under `root`'s packages that breaks the rules, as `file:line: message`."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root)
            for line, module in imported_modules(path, root):
                top = module.split(".")[0]
                if top in PACKAGES and top != package:
                    if top not in ALLOWED[package]:
                        found.append(f"{where}:{line}: {package} must not import {module}")
                    elif top == "client" and not module.startswith(CLIENT_SHARED):
                        found.append(f"{where}:{line}: {package} may import only {', '.join(CLIENT_SHARED)} "
                                     f"from client, not {module}")
                if module.startswith(NOBODY_IMPORTS):
                    found.append(f"{where}:{line}: nothing imports {module} (the shell loads subcommands)")
                if package in TORCH_FREE and top == "torch":
                    found.append(f"{where}:{line}: {package} must stay torch-free, imports {module}")
    return sorted(set(found))


def test_the_packages_import_in_the_allowed_direction():
    assert violations(REPO) == []


@pytest.mark.parametrize("package,line", [
    ("models", "from client.cli import CLIError"),
    ("kernels", "import models.config"),
    ("distill", "    from server.settings import Settings"),
    ("server", "from client.realtime import RealtimeClient"),
    ("server", "from distill.config import EvalConfig"),
    ("client", "import torch"),
    ("client", "from server import app"),
    ("models", "from ..server import app"),
])
def test_a_planted_forbidden_import_is_found(tmp_path, package, line):
    """The checker on a copy of the tree with one forbidden import planted."""
    for name in PACKAGES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    body = f"def f():\n{line}\n" if line.startswith(" ") else f"{line}\n"
    (tmp_path / package / "planted.py").write_text(body)
    assert {v.split(":")[0] for v in violations(tmp_path)} == {f"{package}/planted.py"}


def test_allowed_imports_are_not_reported(tmp_path):
    for name in PACKAGES:
        (tmp_path / name).mkdir()
    (tmp_path / "server" / "ok.py").write_text("from client.protocol.events import SessionStart\nimport models\n"
                                                "from . import app\nfrom .jobs import store\n")
    (tmp_path / "distill" / "ok.py").write_text("from models.config import preset\nimport kernels.dispatch\n")
    (tmp_path / "client" / "ok.py").write_text("from client.protocol import chunks\nfrom .errors import X\n")
    assert violations(tmp_path) == []
