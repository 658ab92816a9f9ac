"""Atomic writes: all or nothing, the umask's permissions, nothing left behind that is trusted."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

import gemma_scope_ext.files
from gemma_scope_ext.files import (
    atomic_write,
    check_writable_dir,
    remove_stale_temporaries,
    write_json,
    write_text,
)

FILES = gemma_scope_ext.files.__file__


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_permissions_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        written = write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert _mode(written) == _mode(tmp_path / "b.txt") == 0o666 & ~umask


def test_an_error_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text(tmp_path / "cfg.json", "old")

    def half_write(tmp):
        with open(tmp, "w") as f:
            f.write("new, half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_write)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json"]


def test_a_killed_writer_leaves_the_old_file_and_a_temporary_that_is_cleaned(tmp_path):
    target = write_text(tmp_path / "w.bin", "old")
    # files.py is loaded on its own: the writer needs no torch, and the test no slow import.
    script = textwrap.dedent(f"""
        import importlib.util, os, signal
        spec = importlib.util.spec_from_file_location("files", {str(FILES)!r})
        files = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(files)
        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(b"partial")
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        files.atomic_write({str(target)!r}, write)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert done.returncode == -signal.SIGKILL
    assert target.read_text() == "old"
    left = [p for p in tmp_path.iterdir() if p.name != "w.bin"]
    assert len(left) == 1 and left[0].name.startswith(".w.bin.") and left[0].suffix == ".tmp"
    assert remove_stale_temporaries(tmp_path, older_than_s=3600) == 0  # might be a live writer
    assert remove_stale_temporaries(tmp_path, older_than_s=0) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


def test_json_refuses_nan_rather_than_writing_invalid_json(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert not list(tmp_path.iterdir())


def test_writable_dir_check(tmp_path):
    assert check_writable_dir(tmp_path / "new" / "deeper").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is an existing file; expected a folder"):
        check_writable_dir(tmp_path / "file")
    with pytest.raises(ValueError, match="cannot write to the output folder"):
        check_writable_dir(tmp_path / "file" / "sub")
