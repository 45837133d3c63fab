"""The documented examples run as written."""

import subprocess
import sys

from conftest import REPO


def test_own_loop_example_runs():
    r = subprocess.run([sys.executable, str(REPO / "examples" / "own_loop.py")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "lambda_max" in r.stdout and "Tr H =" in r.stdout
