"""/healthz's judgement: healthy only while every component is online and heard from; a
given-up, restarting or restarted child is not; the server never judges itself."""

from __future__ import annotations

from test_web_metrics import all_online, clock, state, status, value  # noqa: F401 (fixtures)

from sightd.web.metrics import health

# ---- health ----------------------------------------------------------------------------------


def test_healthy_only_while_every_component_is_online_and_heard(state, clock):  # noqa: F811
    # given nothing heard yet: unhealthy, each missing component named
    healthy, report = health(state)
    assert not healthy and report["status"] == "unavailable"
    assert "subscriber:print: not heard from (listening for 0.0 s)" in report["reasons"]
    # when every expected component says online
    all_online(state)
    healthy, report = health(state)
    assert healthy, report
    assert report["status"] == "ok" and report["components"]["infer"]["state"] == "online"
    # when a capture is reconnecting, it says why
    status(state, "capture:cam0", "reconnecting", reason="cannot open rtsp://cam/door")
    healthy, report = health(state)
    assert report["reasons"] == ["capture:cam0: reconnecting: cannot open rtsp://cam/door"]
    # and when it was not heard from for more than 3 status intervals (1.5 s here)
    status(state, "capture:cam0")
    clock.now += 1.0
    all_online(state, but="capture:cam0")
    clock.now += 1.0  # the capture's last status is now 2 s old
    healthy, report = health(state)
    assert not healthy
    assert report["reasons"][0].startswith("capture:cam0: not heard from for 2.0 s")


def test_a_given_up_or_restarting_child_is_unhealthy(state):  # noqa: F811
    all_online(state)
    crashed = {
        "state": "backoff",
        "pid": None,
        "restarts": 1,
        "last_failure": "exited with code -9",
    }
    children = {
        "capture:cam0": {"state": "running", "pid": 100, "restarts": 0},
        "infer": crashed,
        "subscriber:print": {"state": "given-up", "restarts": 5, "last_failure": "boom"},
    }
    status(state, "supervisor", children=children, given_up=["subscriber:print"])
    healthy, report = health(state)
    assert not healthy
    assert report["reasons"] == [
        "infer: restarting (last failure: exited with code -9)",
        "subscriber:print: given up after 5 restarts (last failure: boom)",
    ]
    assert value(state, "sightd_component_given_up", component="subscriber:print") == 1


def test_a_restarted_child_is_unhealthy_until_it_says_online_again(state):  # noqa: F811
    all_online(state)
    assert health(state)[0]
    # when the supervisor reports the worker under a new pid, one restart more
    children = {
        "capture:cam0": {"state": "running", "pid": 100, "restarts": 0},
        "infer": {"state": "running", "pid": 555, "restarts": 1, "last_failure": "killed"},
        "subscriber:print": {"state": "running", "pid": 102, "restarts": 0},
    }
    status(state, "supervisor", children=children, given_up=[])
    healthy, report = health(state)
    assert report["reasons"] == ["infer: restarted (last failure: killed); not online since"]
    status(state, "infer", "starting")
    assert health(state)[1]["reasons"] == ["infer: starting"]
    # then online again: healthy
    status(state, "infer")
    assert health(state)[0]


def test_this_server_never_judges_itself(state):  # noqa: F811
    all_online(state)
    children = {"http": {"state": "running", "pid": 7, "restarts": 0}}
    status(state, "supervisor", children=children, given_up=[])
    healthy, report = health(state)
    assert healthy, report
    assert "http" not in report["components"]
