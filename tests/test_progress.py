"""Progress bars: one helper, stderr only, drawn where someone watches, off everywhere on --no-progress."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from bevsimdet import progress

BAR_MARKS = ("%|", "it/s", "scene/s", "s/scene")


class FakeStderr(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture(autouse=True)
def _restore_mode():
    before = progress.mode()
    yield
    progress.configure(before)


@pytest.mark.parametrize(
    "mode, allowed, tty, expected",
    [
        (None, True, True, True),  # default: a terminal sees bars
        (None, True, False, False),  # default: logs and pipes do not
        (True, True, False, True),  # --progress: forced
        (False, True, True, False),  # --no-progress: never
        (True, False, True, False),  # a caller that passes progress=False wins
        (None, False, True, False),
    ],
)
def test_enabled_rules(monkeypatch, mode, allowed, tty, expected):
    monkeypatch.setattr(sys, "stderr", FakeStderr(tty))
    progress.configure(mode)
    assert progress.enabled(allowed) is expected


def test_bars_go_to_stderr_only_when_enabled(monkeypatch, capsys):
    err = FakeStderr(False)
    monkeypatch.setattr(sys, "stderr", err)
    progress.configure(None)
    assert list(progress.progress_bar(range(3), desc="quiet")) == [0, 1, 2]
    assert err.getvalue() == ""
    progress.configure(True)
    bar = progress.progress_bar(total=2, desc="forced", unit="scene")
    bar.update(2)
    bar.close()
    assert "forced" in err.getvalue() and "2/2" in err.getvalue()
    assert capsys.readouterr().out == ""


def test_configure_returns_whether_callers_may_draw():
    assert progress.configure(None) is True
    assert progress.configure(True) is True
    assert progress.configure(False) is False


def test_no_progress_silences_bars_deep_inside_a_command(tiny_world, tmp_path, monkeypatch):
    """What `demo --no-progress` hit: prepare's bars, reached through code that passes progress=True."""
    from bevsimdet.data.infos import create_infos

    err = FakeStderr(True)  # even on a terminal
    monkeypatch.setattr(sys, "stderr", err)
    progress.configure(False)
    create_infos(tiny_world, version="v1.0-mini", out_dir=tmp_path / "infos", workers=1, progress=True)
    assert err.getvalue() == ""


# --no-progress is checked in-process above (and end to end by tests/test_demo.py)
@pytest.mark.parametrize("flag, bars", [(None, False), ("--progress", True)])
def test_prepare_command_honours_the_flag(tiny_world, tmp_path, flag, bars):
    """A subprocess's stderr is a pipe: bars only when forced; stdout never carries one."""
    cmd = [sys.executable, "-m", "bevsimdet", "prepare", "--dataroot", str(tiny_world), "--version", "v1.0-mini",
           "--out", str(tmp_path / "infos"), "--workers", "1"] + ([flag] if flag else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert any(m in r.stderr for m in BAR_MARKS) is bars, r.stderr
    assert not any(m in r.stdout for m in BAR_MARKS)
    assert "\r" not in r.stdout


def test_every_bar_goes_through_the_helper():
    """No module draws a tqdm/rich bar of its own (so none can ignore --no-progress)."""
    from pathlib import Path

    package = Path(progress.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if path.name == "progress.py":
            continue
        text = path.read_text(encoding="utf-8")
        if "from tqdm" in text or "import tqdm" in text or "rich.progress" in text or ".status(" in text and "progress_enabled" not in text:
            offenders.append(str(path.relative_to(package)))
    assert not offenders, f"bars outside bevsimdet.progress: {offenders}"
