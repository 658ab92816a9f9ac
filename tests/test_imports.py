"""The package reaches TransformerLens only through paths TransformerLens 4 still has.

TransformerLens 4.0 removed ``HookedTransformer``, ``HookedTransformerConfig``,
``transformer_lens.utils``, ``loading_from_pretrained``, ``pretrained.weight_conversions``,
``components`` and ``hook_points.HookedRootModule``. Only ``models/hooked.py``, which holds what
3.9's HookedTransformer needs, may use them. Every import anywhere in a module is read with ``ast``
(inside functions too), and so is attribute access on an imported ``transformer_lens`` module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gemma_scope_ext"
ISOLATED = PACKAGE / "models" / "hooked.py"

REMOVED_IN_4 = (
    "transformer_lens.HookedTransformer",
    "transformer_lens.HookedTransformerConfig",
    "transformer_lens.utils",
    "transformer_lens.loading_from_pretrained",
    "transformer_lens.pretrained",
    "transformer_lens.components",
    "transformer_lens.hook_points.HookedRootModule",
)


def tl_paths(source: str) -> list[str]:
    """Every dotted TransformerLens path a module's source imports or reads off the module."""
    tree = ast.parse(source)
    paths: list[str] = []
    modules: dict[str, str] = {}  # local name -> TransformerLens module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "transformer_lens":
                    paths.append(alias.name)
                    if alias.asname:
                        modules[alias.asname] = alias.name
                    else:
                        modules["transformer_lens"] = "transformer_lens"
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] == "transformer_lens":
                for alias in node.names:
                    paths.append(f"{node.module}.{alias.name}")
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith("transformer_lens.") and " " not in node.value:
                paths.append(node.value)  # importlib.import_module("transformer_lens.utils")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = []
            obj: ast.expr = node
            while isinstance(obj, ast.Attribute):
                chain.append(obj.attr)
                obj = obj.value
            if isinstance(obj, ast.Name) and obj.id in modules:
                paths.append(".".join([modules[obj.id], *reversed(chain)]))
    return paths


def removed_paths(source: str) -> list[str]:
    return sorted({p for p in tl_paths(source)
                   if any(p == r or p.startswith(r + ".") for r in REMOVED_IN_4)})


def test_only_the_isolating_module_uses_paths_removed_in_transformer_lens_4():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != ISOLATED and (bad := removed_paths(path.read_text())):
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, (
        f"TransformerLens paths that 4.x removed, outside {ISOLATED.relative_to(ROOT)}: "
        f"{offenders}; move the code that needs them there")
    # The isolating module is read the same way and does use them (the audit sees real imports).
    assert {"transformer_lens.HookedTransformer", "transformer_lens.utils"} <= set(
        removed_paths(ISOLATED.read_text()))


def test_the_audit_catches_every_way_of_reaching_a_removed_path():
    bad = {
        "from transformer_lens import HookedTransformer": "transformer_lens.HookedTransformer",
        "from transformer_lens import utils": "transformer_lens.utils",
        "import transformer_lens.utils as u": "transformer_lens.utils",
        "import transformer_lens as tl\ncfg = tl.HookedTransformerConfig":
            "transformer_lens.HookedTransformerConfig",
        "import transformer_lens\nx = transformer_lens.loading_from_pretrained.f":
            "transformer_lens.loading_from_pretrained.f",
        "def f():\n    from transformer_lens.hook_points import HookedRootModule":
            "transformer_lens.hook_points.HookedRootModule",
        "from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights":
            "transformer_lens.pretrained.weight_conversions.gemma.convert_gemma_weights",
        "import importlib\nimportlib.import_module('transformer_lens.components')":
            "transformer_lens.components",
    }
    for source, path in bad.items():
        assert path in removed_paths(source), source
    fine = ("from transformer_lens import HookedRootModule\n"
            "from transformer_lens.hook_points import HookPoint\n"
            "from transformer_lens import ActivationCache\n"
            "from transformer_lens.model_bridge import TransformerBridge\n"
            "import transformer_lens.utilities\n"
            "x = 'transformer_lens.utils is gone in 4.x'\n")
    assert removed_paths(fine) == []
