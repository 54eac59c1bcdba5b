"""``bivio compare`` end to end: real servers on real ports, the real load generator.

Durations are tiny (0.3 s per measurement): the tests check what the command
does (three modes, the checks, the verdict, the reports, bad input, Ctrl-C),
never how fast anything was. The HTML report is opened in headless Chromium
(Debian's ``chromium``), which must lay its charts out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, env_without_bivio, wait_until

pytest.importorskip("channels")

PROJECT = "tests.apps.compareproj"
QUICK = ["--duration", "0.3", "--concurrency", "1,4", "--no-progress"]
TIMEOUT = 120


@dataclass
class Done:
    code: int
    out: str
    err: str


def compare(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Done:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("BIVIO_", "COMPAREPROJ_", "DJANGO_SETTINGS"))}
    full_env.update(env or {})
    done = subprocess.run([sys.executable, "-m", "bivio", "compare", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=TIMEOUT)
    return Done(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def project_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Done, dict, Path]:
    """One comparison of the test project (default paths), shared by the tests that read it."""
    base = tmp_path_factory.mktemp("compare")
    done = compare("--django", PROJECT, *QUICK, "--json", str(base / "r.json"),
                   "--html", str(base / "r.html"))
    assert done.code == 0, done.out + done.err
    return done, json.loads((base / "r.json").read_text()), base / "r.html"


def test_three_modes_measured_and_hybrid_recommended(project_run):
    done, report, _ = project_run
    assert set(report["modes"]) == {"wsgi", "asgi", "hybrid"}
    for name, mode in report["modes"].items():
        assert mode["ok"] is True and mode["error"] is None, name
        measured = {path for path, figures in mode["paths"].items() if figures["runs"]}
        assert measured == {"/sync/", "/async/"}, name
        assert mode["paths"]["/boom/"] == {"check": {"status": 500, "bytes": 145}, "runs": []}
        for path in measured:
            runs = mode["paths"][path]["runs"]
            assert [r["concurrency"] for r in runs] == [1, 4], (name, path)
            for run in runs:
                assert {"rps", "p50_ms", "p99_ms", "errors"} <= set(run)
                assert isinstance(run["rps"], float) and run["errors"] == 0
                assert run["rps"] > 0  # something was served; how fast is not asserted
        assert mode["rss_mib_per_worker"] > 0
    verdict = report["verdict"]
    assert verdict["mode"] == "hybrid"
    assert verdict["command"].startswith(f"bivio --django {PROJECT}")
    assert any("/ws/echo/" in reason and "ASGI" in reason for reason in verdict["reasons"])
    assert "Verdict: hybrid" in done.out and verdict["command"] in done.out


def test_the_project_is_inspected(project_run):
    done, report, _ = project_run
    project = report["project"]
    views = {v["route"]: v["async"] for v in project["views"]}
    assert views["/sync/"] is False and views["/async/"] is True
    assert "/item/<int:n>/" in views  # listed, but takes an argument: not a default path
    assert project["default_paths"] == ["/sync/", "/async/", "/boom/"]
    sync_only = [m["name"] for m in project["middleware"] if not m["async_capable"]]
    assert sync_only == [f"{PROJECT}.middleware.stamp"]
    assert project["databases"][0]["conn_max_age"] == 60
    assert project["websocket_routes"] == ["/ws/echo/"]
    assert f"sync-only (Django adapts the chain around each under ASGI): {PROJECT}" \
           f".middleware.stamp" in done.out
    assert "CONN_MAX_AGE=60" in done.out


def test_a_path_failing_everywhere_is_left_out_with_one_line(project_run):
    done, report, _ = project_run
    lines = [line for line in done.out.splitlines() if "/boom/" in line]
    assert lines == ["left out: /boom/ answers 500 in every mode: the view itself fails, "
                     "whatever the server; fix it, or leave it out with --path"]
    assert report["settings"]["paths"] == ["/sync/", "/async/"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("needs Debian's chromium (scripts/system-deps.sh installs it as root) to "
                    "render the HTML report")
    return path


def test_the_html_report_renders_its_charts_in_a_browser(project_run, tmp_path):
    _, _, page = project_run
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # no network needed
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=TIMEOUT)
    dom = done.stdout
    assert "Verdict: hybrid" in dom, done.stderr[-2000:]
    # The page's script counts the charts the browser laid out with a visible size:
    # throughput, p50 and p99 for each of the two paths.
    assert re.search(r'data-charts-drawn="(\d+)"', dom).group(1) == "6"
    assert dom.count('class="bar wsgi"') == dom.count('class="bar hybrid"') == 12


def test_an_asgi_app_that_fails_to_import(tmp_path):
    done = compare("--django", PROJECT, *QUICK, "--path", "/sync/",
                   "--json", str(tmp_path / "r.json"), env={"COMPAREPROJ_BREAK_ASGI": "1"})
    assert done.code == 0, done.out + done.err
    line = next(line for line in done.out.splitlines() if line.startswith("ASGI:"))
    assert line.startswith("ASGI: fails to start: ")
    assert "No module named 'missing_realtime_dependency'" in line
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["modes"]["asgi"]["ok"] is False
    assert report["modes"]["asgi"]["error"].startswith("fails to start: ")
    assert report["modes"]["hybrid"]["ok"] is False  # it loads the same ASGI app
    wsgi = report["modes"]["wsgi"]
    assert wsgi["ok"] is True and len(wsgi["paths"]["/sync/"]["runs"]) == 2
    assert report["verdict"]["mode"] == "wsgi"


def one_error_line(done: Done) -> str:
    assert done.code == 2, done.out + done.err
    lines = done.err.strip().splitlines()
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == lines[-1:], done.err  # one line, the last; before it only where servers ran
    assert errors[0].startswith("bivio compare: error: ")
    return errors[0]


def test_a_wrong_project_name():
    line = one_error_line(compare("--django", "nosuchproject", *QUICK))
    assert "no package 'nosuchproject'" in line and "manage.py" in line


def test_settings_that_refuse_127_0_0_1():
    line = one_error_line(compare("--django", PROJECT, *QUICK,
                                  env={"COMPAREPROJ_HOSTS": "example.com"}))
    assert "ALLOWED_HOSTS = ['example.com']" in line and "add '127.0.0.1'" in line


def test_a_path_that_answers_404_in_every_mode():
    line = one_error_line(compare("--django", PROJECT, *QUICK, "--path", "/missing/"))
    assert "/missing/ answers 404 in every mode" in line and "--path" in line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_ctrl_c_stops_every_server_and_prints_what_was_measured(sig: int):
    """SIGKILL cannot be caught: the servers then stop on their own (they die with it)."""
    env = env_without_bivio()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bivio", "compare", "--django", PROJECT, "--path", "/sync/",
         "--duration", "30", "--concurrency", "1", "--no-progress"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []
    pids: list[int] = []
    measuring = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            if "measuring" in line:
                measuring.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert measuring.wait(TIMEOUT), "".join(err_lines)
        pids += [int(p) for p in re.findall(r"\(pid (\d+)\)", "".join(err_lines))]
        assert len(pids) == 4  # three checked, then the first measured
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:  # had the test failed, no server of it may be left running
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
    reader.join(5)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "interrupted: every server started is stopped; measured so far:" in out
        assert "WSGI" in out and "/sync/" in out
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 30)


def test_the_bundled_example(tmp_path):
    """The example project (a Channels chat): three modes, hybrid recommended."""
    done = compare("--django", "example", *QUICK, "--path", "/sync/", "--path", "/async/",
                   "--json", str(tmp_path / "r.json"), cwd=ROOT / "examples",
                   env={"EXAMPLE_DB_PATH": str(tmp_path / "db.sqlite3"),
                        "EXAMPLE_STATIC_ROOT": str(tmp_path / "static")})
    assert done.code == 0, done.out + done.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert all(mode["ok"] for mode in report["modes"].values()), report["modes"]
    assert report["project"]["websocket_routes"] == ["/ws/chat/<room>/"]
    assert report["verdict"]["mode"] == "hybrid"
    assert report["verdict"]["command"].startswith("bivio --django example")
