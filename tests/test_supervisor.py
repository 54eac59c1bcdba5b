"""The supervisor's pure decisions: which options a worker gets, which files reload, limits."""

from __future__ import annotations

import random
import signal

import pytest
from watchfiles import Change

from bivio.core.config import Config, ConfigError
from bivio.process.supervisor import (
    ReloadFilter,
    describe_exit,
    heartbeat_interval,
    request_limit,
    worker_options,
)


def test_worker_options_round_trip_to_a_single_process_config():
    config = Config.from_options(
        {"workers": 3, "reload": True, "reload_dir": ["src"], "uds": "/tmp/x.sock",
         "limit_max_requests": 10, "header": ["x-a:1"], "timeout_keep_alive": 2.5},
        env={"FORWARDED_ALLOW_IPS": "10.0.0.0/8"})
    worker = Config.from_options(worker_options(config, 7), env={})
    assert not worker.needs_supervisor()  # the worker takes the single-process path
    assert (worker.fd, worker.uds) == (7, None)  # it serves the inherited listener
    assert worker.header == ("x-a:1",)
    assert worker.extra_headers == config.extra_headers
    assert worker.timeout_keep_alive == 2.5
    assert worker.forwarded_allow_ips == "10.0.0.0/8"  # resolved by the parent, not re-read


def test_web_concurrency_and_precedence():
    assert Config.from_options({}, env={"WEB_CONCURRENCY": "4"}).workers == 4
    env = {"WEB_CONCURRENCY": "4", "BIVIO_WORKERS": "2"}
    assert Config.from_options({}, env=env).workers == 2
    assert Config.from_options({"workers": 5}, env=env).workers == 5
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
        Config.from_options({}, env={"WEB_CONCURRENCY": "zero"})
    assert Config.from_options({}, env={}).workers is None


def test_which_options_start_a_supervisor():
    assert not Config.from_options({}, env={}).needs_supervisor()
    assert Config.from_options({"workers": 1}, env={}).needs_supervisor()
    assert Config.from_options({"reload": True}, env={}).needs_supervisor()
    assert Config.from_options({"limit_max_requests": 100}, env={}).needs_supervisor()


def test_request_limit_jitter_stays_in_range():
    config = Config.from_options({"limit_max_requests": 100, "limit_max_requests_jitter": 10},
                                 env={})
    rng = random.Random(1)
    limits = {request_limit(config, rng) for _ in range(500)}
    assert min(limits) >= 100 and max(limits) <= 110
    assert len(limits) > 1  # workers do not all recycle at the same count
    assert request_limit(Config.from_options({"limit_max_requests": 7}, env={})) == 7
    assert request_limit(Config.from_options({}, env={})) is None


def test_heartbeat_is_several_times_per_timeout():
    for timeout in (0.1, 1.0, 5.0, 30.0, 300.0):
        config = Config.from_options({"timeout_worker_healthcheck": timeout}, env={})
        assert heartbeat_interval(config) * 2 <= timeout


def test_reload_filter():
    default = ReloadFilter()
    assert default(Change.modified, "/p/app.py")
    assert not default(Change.modified, "/p/notes.txt")
    assert not default(Change.modified, "/p/__pycache__/app.cpython-311.pyc")
    assert not default(Change.modified, "/p/.git/index")
    custom = ReloadFilter(include=("*.html",), exclude=("migrations", "*_test.py"))
    assert custom(Change.added, "/p/templates/page.html")
    assert custom(Change.modified, "/p/app.py")
    assert not custom(Change.modified, "/p/app/migrations/0001_initial.py")
    assert not custom(Change.modified, "/p/app/models_test.py")


def test_describe_exit():
    assert describe_exit(3) == "exit code 3: application startup failed"
    assert describe_exit(1) == "exit code 1: the app could not be loaded"
    assert describe_exit(5) == "exit code 5: requests were aborted at shutdown"
    assert describe_exit(7) == "exit code 7"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
