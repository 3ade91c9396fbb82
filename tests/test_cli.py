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
