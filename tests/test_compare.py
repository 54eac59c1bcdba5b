"""``bivio compare`` in-process: the verdict's rule, the reports, the flags.

Comparisons here are built from figures, not measured (tests/e2e/test_compare.py
runs the real thing), so each rule can be shown with the numbers that trigger it.
"""

from __future__ import annotations

import json
import re

import pytest

from bivio import cli
from bivio.compare import command, report
from bivio.compare.load import Answer, RunResult
from bivio.compare.project import ProjectInfo
from bivio.compare.run import Comparison, ModeResult, Setup, _judge_answers
from bivio.compare.verdict import Targets, decide

PATHS = ["/page/", "/async/"]


def comparison(rps: dict[str, float], *, websocket: bool = False, failed: tuple[str, ...] = (),
               async_rps: dict[str, float] | None = None) -> Comparison:
    """Three modes with ``rps[mode]`` on /page/ (and ``async_rps`` on /async/) at both levels."""
    modes = {"wsgi": ["p.wsgi:application"], "asgi": ["p.asgi:application"],
             "hybrid": ["--django", "p", "--asgi-path", "/async/"]}
    setup = Setup(modes, PATHS, [], [1, 16], 1.0, 0.1, {}, ".")
    project = ProjectInfo("p", websocket_routes=["/ws/"] if websocket else [],
                          views=[{"route": "/async/", "path": "/async/", "view": "v",
                                  "async": True}])
    result = Comparison(setup, project, {n: ModeResult(n, a) for n, a in modes.items()},
                        paths=list(PATHS))
    for name, mode in result.modes.items():
        if name in failed:
            mode.fail("fails to start: ImportError: boom")
            continue
        for path, value in (("/page/", rps[name]), ("/async/", (async_rps or rps)[name])):
            mode.runs[path] = [RunResult(c, int(value), 0, 1.0, [0.001] * 3) for c in (1, 16)]
            mode.run_cpu[path] = [0.1, 0.1]
        mode.rss = 50 * 2**20
    return result


TARGETS = Targets("p", "p.wsgi:application", "p.asgi:application", [])


def test_wsgi_wins_a_project_without_websockets():
    verdict = decide(comparison({"wsgi": 6000, "asgi": 800, "hybrid": 5900}), TARGETS)
    assert verdict.mode == "wsgi"
    assert verdict.command.startswith("bivio p.wsgi:application")
    assert verdict.reasons[0].startswith("pages through WSGI are 7.5× faster here")


def test_websocket_routes_rule_out_wsgi_and_hybrid_wins():
    verdict = decide(comparison({"wsgi": 6000, "asgi": 800, "hybrid": 5900}, websocket=True),
                     TARGETS)
    assert verdict.mode == "hybrid"
    assert verdict.command.startswith("bivio --django p")
    assert "/ws/ needs ASGI (WebSocket), so pure WSGI is ruled out" in verdict.reasons


def test_a_simpler_mode_within_ten_percent_wins():
    verdict = decide(comparison({"wsgi": 1000, "asgi": 950, "hybrid": 1040}, websocket=True),
                     TARGETS)
    assert verdict.mode == "asgi"
    assert any("ASGI is within 10% of hybrid" in r for r in verdict.reasons)


def test_a_failing_mode_is_never_recommended_however_fast():
    verdict = decide(comparison({"wsgi": 9000, "asgi": 800, "hybrid": 5900},
                                failed=("wsgi",)), TARGETS)
    assert verdict.mode == "hybrid"
    assert "WSGI is out: fails to start: ImportError: boom" in verdict.reasons


def test_an_async_path_goes_to_asgi_only_where_asgi_measured_faster():
    slow = decide(comparison({"wsgi": 6000, "asgi": 800, "hybrid": 5900}, websocket=True),
                  TARGETS)
    assert "--asgi-path" not in slow.command
    assert any(r.startswith("/async/ is an async view, yet no faster through ASGI")
               for r in slow.reasons)
    fast = decide(comparison({"wsgi": 6000, "asgi": 800, "hybrid": 5900}, websocket=True,
                             async_rps={"wsgi": 100, "asgi": 900, "hybrid": 900}), TARGETS)
    assert "--asgi-path /async/" in fast.command


def test_answers_unlike_the_others_fail_a_mode():
    result = comparison({"wsgi": 1, "asgi": 1, "hybrid": 1})
    result.paths = []
    for name in result.modes:
        result.modes[name].answers = {"/page/": Answer(200, 1000), "/async/": Answer(200, 50)}
    result.modes["asgi"].answers["/page/"] = Answer(500, 145)
    result.modes["hybrid"].answers["/async/"] = Answer(200, 5000)
    _judge_answers(result)
    assert result.modes["wsgi"].ok
    assert result.modes["asgi"].error == "/page/ answers 500 where WSGI 200, hybrid 200"
    assert result.modes["hybrid"].error == ("/async/ answers 5000 bytes where the others "
                                            "answer about 50")
    assert result.paths == PATHS


def test_the_json_has_the_documented_schema():
    result = comparison({"wsgi": 6000, "asgi": 800, "hybrid": 5900}, websocket=True)
    data = json.loads(json.dumps(report.as_json(result, decide(result, TARGETS))))
    for mode in data["modes"].values():
        assert isinstance(mode["ok"], bool) and mode["error"] is None
        for figures in mode["paths"].values():
            for run in figures["runs"]:
                assert isinstance(run["concurrency"], int)
                for key in ("rps", "p50_ms", "p99_ms"):
                    assert isinstance(run[key], float)
                assert isinstance(run["errors"], int)
    assert set(data["verdict"]) >= {"mode", "command", "reasons"}


def test_the_html_page_is_self_contained_with_a_chart_per_path_and_figure():
    result = comparison({"wsgi": 6000, "asgi": 800, "hybrid": 5900}, websocket=True)
    page = report.html_page(result, decide(result, TARGETS))
    assert page.count('<svg class="chart"') == 3 * len(PATHS)
    assert not re.search(r"<(link|img)\b|src=", page)  # nothing fetched from anywhere
    assert "Verdict: hybrid" in page


def test_the_terminal_table_marks_a_client_limited_figure():
    result = comparison({"wsgi": 6000, "asgi": 800, "hybrid": 5900})
    result.modes["wsgi"].runs["/page/"][1].client_cpu = 0.99
    text = report.table(result)
    assert re.search(r"/page/\s+16\s+6,000\*", text)
    assert "the load generator used a whole core" in text


def test_percentiles_are_nearest_rank():
    run = RunResult(1, 100, 0, 1.0, [i / 1000 for i in range(1, 101)])
    assert run.percentile(50) == pytest.approx(50.0)
    assert run.percentile(99) == pytest.approx(99.0)


def test_bivio_compare_has_its_own_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bivio compare")
    for flag in ("--django", "--wsgi", "--asgi", "--path", "--header", "--duration",
                 "--concurrency", "--workers", "--json", "--html"):
        assert flag in out


@pytest.mark.parametrize(("argv", "message"), [
    ([], "name the project: --django PROJECT, or both --wsgi MOD:APP and --asgi MOD:APP"),
    (["--wsgi", "a:b"], "name the project"),
    (["--django", "p", "--concurrency", "0"], "--concurrency: must be at least 1, got 0"),
    (["--django", "p", "--path", "page/"], "--path: must start with /, got 'page/'"),
    (["--django", "p", "--header", "nocolon"], "--header: expected 'Name: value'"),
])
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_path_faster_through_asgi_is_routed_to_it_in_hybrid_mode():
    """A sync view that waits (streams, sleeps) holds one of WSGI's threads per request."""
    result = comparison({"wsgi": 6000, "asgi": 800, "hybrid": 5900}, websocket=True)
    result.modes["wsgi"].runs["/page/"][1] = RunResult(16, 7, 0, 1.0, [1.6] * 7)
    result.modes["asgi"].runs["/page/"][1] = RunResult(16, 18, 0, 1.0, [0.8] * 18)
    verdict = decide(result, TARGETS)
    assert verdict.mode == "hybrid"
    assert "--asgi-path /page/" in verdict.command
    assert any(r.startswith("/page/ is faster through ASGI here (18 vs 7 req/s")
               for r in verdict.reasons)


def test_every_flag_is_documented():
    """docs/asgi-or-wsgi.md's table lists each flag of ``bivio compare --help``; the README's
    quick start points to the command."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    docs = (root / "docs" / "asgi-or-wsgi.md").read_text()
    section = docs.split("## Measure your own project: `bivio compare`", 1)[1]
    for action in command.build_parser()._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert f"`{flag}" in section, flag
    assert "bivio compare --django" in (root / "README.md").read_text()
