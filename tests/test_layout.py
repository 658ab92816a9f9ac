"""The package's shape: no import cycles, re-export-only subpackage inits, small modules, stable API.

The import graph is read from the source with ``ast`` (every ``import`` anywhere in a module, in
functions and ``TYPE_CHECKING`` blocks too), so a cycle hidden behind a lazy import is still found.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "gemma_scope_ext"
MAX_LINES = 350

# Every name the package exported before it was split into subpackages; each must stay importable.
WAVE_ONE_API = """
AblationResult AttributionRow AttributionTable CatalogEntry EvalResult FeatureGraph GEMMA2_MODELS
Gemma2Spec GemmaScopeSAE GemmaScopeSAEConfig GemmaScopeTrainingSAE GemmaScopeTrainingSAEConfig
GemmaScopeTrainingTranscoder GemmaScopeTrainingTranscoderConfig GemmaScopeTranscoder
GemmaScopeTranscoderConfig GraphNode Release SITES Site Splice SweepResult TranscoderTrainingRunner
TransferResult ablate attribution_patching clamp compare_saes evaluate evaluate_datasets
evaluate_many evaluate_transfer feature_graph find_saes from_pretrained gemma_scope_sae_config
gemma_scope_transcoder_config get_entry get_spec hook_name hook_name_out integrated_gradients
list_releases load_gemma2 log_prob logit_diff position_buckets register_with_sae_lens sample_texts
sample_tokens site_d_in splice steer tiny_gemma2
""".split()


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root / package``."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package modules it imports (submodules named in ``from x import y`` included)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(ROOT, PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "planted"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from planted.sub.a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from planted.b import g\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from .sub import a\n")
    graph = import_graph(tmp_path, "planted")
    assert graph["planted.b"] == {"planted.sub.a"}  # relative 'from .sub import a' resolved
    assert find_cycle(graph) == ["planted.b", "planted.sub.a", "planted.b"]
    (pkg / "b.py").write_text("import os\n")
    assert find_cycle(import_graph(tmp_path, "planted")) is None


def test_subpackages_do_not_import_one_another_in_a_cycle():
    graph = import_graph(ROOT, PACKAGE)

    def group(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages = {group(m) for m in graph}
    coarse = {p: {group(t) for m in graph if group(m) == p for t in graph[m]} - {p}
              for p in packages}
    # The package root's __init__ re-exports everything; it is a consumer, not a layer.
    coarse = {p: deps - {PACKAGE} for p, deps in coarse.items() if p != PACKAGE}
    cycle = find_cycle(coarse)
    assert cycle is None, "subpackage cycle: " + " -> ".join(cycle or [])


def _is_reexport_only(tree: ast.Module, allow_call: str | None = None) -> bool:
    for i, node in enumerate(tree.body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if isinstance(node, ast.ImportFrom):
            continue
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__all__"]:  # type: ignore[attr-defined]
            continue
        if (allow_call and isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == allow_call):
            continue
        return False
    return True


@pytest.mark.parametrize("init", sorted((ROOT / PACKAGE).rglob("__init__.py")),
                         ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_package_inits_hold_only_re_exports(init):
    tree = ast.parse(init.read_text())
    # Only the package root registers with SAELens on import, by one call.
    allow = "register_with_sae_lens" if init.parent.name == PACKAGE else None
    assert _is_reexport_only(tree, allow), f"{init} holds more than re-exports"
    assert not _is_reexport_only(ast.parse("x = 1\n"))  # the check can fail


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / PACKAGE).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_wave_one_public_names_still_import_from_the_package():
    import gemma_scope_ext

    missing = [n for n in WAVE_ONE_API if not hasattr(gemma_scope_ext, n)]
    assert not missing
    assert set(WAVE_ONE_API) <= set(gemma_scope_ext.__all__)
    assert all(hasattr(gemma_scope_ext, n) for n in gemma_scope_ext.__all__)


def test_tests_mirror_the_subpackages():
    subpackages = {p.parent.name for p in (ROOT / PACKAGE).glob("*/__init__.py")}
    test_dirs = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "helpers"}
    assert subpackages <= test_dirs | {"__pycache__"}, subpackages - test_dirs
