"""The house rules, checked on the source: the direction of imports between stages and layers, formats
behind their registry, no module without ``__all__``, no formatting opt-outs, no input check by
``assert``, and the docs the code cites exist in the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("ingest", "shards", "training", "benchmarks")


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports (relative imports resolved), at any depth of the file."""
    name = _name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


def _uses(modules: set[str], prefix: str) -> set[str]:
    return {m for m in modules if m == prefix or m.startswith(prefix + ".")}


#: (importer, what it must not import, why)
RULES = [
    (
        "shards.plan",
        ("shards.format", "shards.loading", "shards.storage", "torch", "zarr", "fsspec", "pyarrow", "h5py"),
        "plan is pure: no other layer, no file or network I/O, no torch",
    ),
    ("shards.format", ("shards.loading", "shards.plan"), "formats know no loader and no plan"),
    ("shards.storage", ("shards.format", "shards.loading", "shards.plan"), "storage knows no format"),
    (
        "shards.tokens",
        ("shards.loading", "shards.plan", "shards.storage", "torch"),
        "tokens are the format's contract: no loader, no plan, no torch",
    ),
    ("shards", ("ingest", "training", "benchmarks"), "shards imports neither ingest nor training"),
    ("training", ("ingest", "benchmarks"), "training reads shard sets, and tokenizes an AnnData with shards.tokens"),
    ("ingest", ("training", "benchmarks", "shards.loading"), "ingest writes through formats, never through the loader"),
]


@pytest.mark.parametrize(("importer", "banned", "why"), RULES, ids=[r[0] for r in RULES])
def test_imports_point_one_way(importer, banned, why):
    bad = []
    for path in _modules(importer.replace(".", "/")):
        used = _imports(path)
        bad += [f"{_name(path)} imports {m}" for b in banned for m in sorted(_uses(used, b))]
    assert not bad, f"{why}: {bad[:5]}"


def test_the_rule_checker_sees_a_violation(tmp_path):
    """The checker itself: a relative import across layers is resolved and caught."""
    probe = tmp_path / "shards" / "plan" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from ..loading import dataset\nimport torch\n")
    used = _imports(probe, tmp_path)
    assert _uses(used, "shards.loading") == {"shards.loading", "shards.loading.dataset"} and _uses(used, "torch")


def test_formats_are_chosen_through_the_registry():
    """No branch on a format's name outside its own package (``shards/format``)."""
    pattern = re.compile(r"""==\s*["'](zarr|webdataset)["']|["'](zarr|webdataset)["']\s*==""")
    bad = [
        f"{p.relative_to(ROOT)}:{i}"
        for package in ("ingest", "shards", "training")
        for p in _modules(package)
        if "format" not in p.relative_to(ROOT).parts[:2]
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not bad, bad


def test_every_module_declares_its_public_names_and_formatting_is_ruffs():
    missing, skips = [], []
    for package in ("ingest", "shards", "training"):
        for p in _modules(package):
            text = p.read_text()
            if p.name not in ("__main__.py",) and text.strip() and "__all__" not in text:
                missing.append(str(p.relative_to(ROOT)))
            if "fmt: skip" in text or "fmt: off" in text:
                skips.append(str(p.relative_to(ROOT)))
    assert not missing, f"modules without __all__: {missing}"
    assert not skips, f"formatting opt-outs: {skips}"


def test_input_checks_are_errors_not_asserts():
    """``assert`` disappears under ``python -O``: user input is checked with a CellshardError."""
    bad = []
    for package in ("ingest", "shards", "training"):
        for p in _modules(package):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Assert):
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


def test_the_code_cites_only_files_of_the_repository():
    """Docs cited by the code and the README live in the repository (``docs/``), not outside it."""
    outside = re.compile(r"\b(DESIGN|PLATFORM|STYLE)\.md\b")
    texts = [(p, p.read_text()) for package in PACKAGES for p in _modules(package)]
    texts += [(ROOT / "README.md", (ROOT / "README.md").read_text())]
    texts += [(p, p.read_text()) for p in (ROOT / "docs").glob("*.md")]
    bad = [str(p.relative_to(ROOT)) for p, text in texts if outside.search(text)]
    assert not bad, f"cite files outside the repository: {bad}"
    cited = {m for _, text in texts for m in re.findall(r"docs/[A-Z]+\.md", text)}
    assert cited and all((ROOT / c).is_file() for c in cited), cited
