"""Reports in a real browser: headless Chromium (Debian's package) opens a run report and
an experiment report, every figure has loaded (complete, with a natural size), the page
logged no console error and raised no script error; a screenshot of each is saved
(tests/artifacts/ when SGDLAB_SCREENSHOTS is set, else the test's folder). Skips where
Chromium is absent."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import small_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")

# flags this machine's Chromium needs as root with no network (machines/python.md)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]

CHECK = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || e)));
const consoleError = console.error;
console.error = (...a) => { window.__errors.push(a.join(" ")); consoleError(...a); };
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                  .map(i => i.alt || i.src.slice(0, 40));
  document.title = "SGDLAB-CHECK " + JSON.stringify({images: imgs.length, bad: bad,
                                                      errors: window.__errors});
});
</script>"""


def chromium(tmp: Path, args: list[str]) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def check_page(page: Path, tmp: Path, shot: Path, height: int) -> dict:
    probe = tmp / (page.stem + "-checked.html")
    probe.write_text(page.read_text().replace("</title>", "</title>" + CHECK, 1))
    r = chromium(tmp, ["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()])
    assert r.returncode == 0, r.stderr[-2000:]
    found = re.search(r"<title>SGDLAB-CHECK (.*?)</title>", r.stdout, re.S)
    assert found, r.stdout[:500]
    import html

    result = json.loads(html.unescape(found.group(1)))
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # the page logged nothing at all
    r = chromium(tmp, [f"--window-size=1100,{height}", f"--screenshot={shot}", page.as_uri()])
    assert r.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    return result


def shots_folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SGDLAB_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_run_report_in_chromium(store, tmp_path):
    from sgdlab.report import write_report
    from sgdlab.train import train

    cfg = small_config(probes=[{"name": "hessian", "k": 3, "n": 128},
                               {"name": "weights"}],
                       **{"optim.lr_schedule": {"kind": "cosine"}})
    run = train(cfg, store, progress=False)
    page = write_report(store, run.id)
    result = check_page(page, tmp_path, shots_folder(tmp_path) / "run-report.png", 3300)
    assert result["images"] >= 5 and result["bad"] == [] and result["errors"] == []


def test_experiment_report_in_chromium(store, tmp_path):
    from sgdlab.experiments import run_experiment

    result = run_experiment("edge-of-stability", store, scale="smoke", quiet=True)
    page = Path(result.html_path)
    checked = check_page(page, tmp_path, shots_folder(tmp_path) / "experiment-report.png", 1400)
    assert checked["images"] >= 1 and checked["bad"] == [] and checked["errors"] == []
