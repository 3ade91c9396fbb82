import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "bevsimdet", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    assert "Usage" in r.stdout


def test_unknown_command_fails():
    r = run("no-such-command")
    assert r.returncode != 0


def test_a_training_stopped_by_a_signal_ends_in_one_line(monkeypatch, capsys):
    # demo / ablate / claim train in-process: a Ctrl-C there saves a checkpoint and must end in
    # one line with the signal's exit code, not a traceback
    import pytest

    from bevsimdet import cli
    from bevsimdet.engine.train import TrainingInterrupted

    def stopped(args):
        raise TrainingInterrupted("stopped by signal at step 3/10 of runs/x; run the same command again to continue", 2)

    monkeypatch.setattr(cli, "_run_fast", stopped)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo"])
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert err == "stopped: stopped by signal at step 3/10 of runs/x; run the same command again to continue\n"


def test_other_errors_still_raise(monkeypatch):
    import pytest

    from bevsimdet import cli

    def broken(args):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(cli, "_run_fast", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["demo"])
