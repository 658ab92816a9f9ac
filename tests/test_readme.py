"""The README's python code blocks run as written, offline.

Convention: a block opened with ```python runs here, in order, in one namespace; a block opened with
```python no-run needs real Gemma weights, a GPU or the hub (none of which a test may touch) and is
only parsed. Any other info string on a python block is an error, so a typo cannot skip a block.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(python[^\n]*)\n(.*?)^```", re.S | re.M)

pytestmark = pytest.mark.usefixtures("one_thread")


def python_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, code) of every python block of ``text``, in order."""
    return [(m.group(1).strip(), m.group(2)) for m in BLOCK.finditer(text)]


def test_the_block_finder_sees_both_kinds():
    text = "x\n```python\nprint(1)\n```\n```python no-run\nboom()\n```\n```bash\nls\n```\n"
    assert python_blocks(text) == [("python", "print(1)\n"), ("python no-run", "boom()\n")]


def test_readme_python_blocks_run(capsys):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    kinds = {info for info, _ in blocks}
    assert kinds <= {"python", "python no-run"}, f"unknown info strings: {kinds}"
    runnable = [code for info, code in blocks if info == "python"]
    assert runnable, "the README has no runnable python block"
    for _, code in blocks:
        ast.parse(code)  # every block is at least valid Python
    namespace: dict = {"__name__": "__readme__"}
    for code in runnable:
        exec(compile(code, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "attribution_patching: metric" in out  # the quickstart printed its ranking
