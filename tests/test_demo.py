"""`sightd demo`: from nothing to a scored live run; its cache, its cards and its judge."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import httpx
import pytest
from conftest import wait_for

from sightd.demo.run import CACHE_KEYS, demo_train_config, prepare_digits, prepare_model
from sightd.demo.score import Heard, Segment, judge, score
from sightd.demo.video import card_order
from sightd.errors import SightdError

SUMMARY = re.compile(
    r"^event accuracy (\d+)% \((\d+) of (\d+) cards announced in order, (\d+) wrong events, "
    r"(\d+) to unknown\); "
    r"latency capture to subscriber p50 (\d+) ms, p99 (\d+) ms over (\d+) labels$"
)


@pytest.mark.slow
def test_demo_trains_runs_the_pipeline_and_ends_with_its_accuracy_line(tmp_path):
    # given a fresh work folder (no data, no model); 4 epochs keep the test short (with 2 the
    # augmented model is still too unsure to announce half the cards)
    command = [sys.executable, "-m", "sightd", "demo", "--seconds", "20", "--epochs", "4"]
    demo = subprocess.Popen(
        [*command, "--workdir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # one torch thread: beside the rest of a test run, two threads that wait on each other
        # made an epoch 15x slower on a loaded 2-core machine
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        # when it runs to the end
        output, _ = demo.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)
    lines = output.strip().splitlines()

    # then it wrote the data set, trained, showed labels and events, and scored the events
    assert demo.returncode == 0, output[-3000:]
    assert any("writing the digits data set" in line for line in lines)
    assert any("training the seed ResNet on digits: 4 epochs" in line for line in lines)
    assert any("pipeline up after" in line for line in lines)
    assert sum("(was " in line for line in lines) >= 5  # events, from the print subscriber
    summary = SUMMARY.match(lines[-1])
    assert summary, lines[-1]
    accuracy, announced, cards, _, _, p50, p99, labels = map(int, summary.groups())
    assert cards >= 8 and labels >= 80  # ~13 cards of 1.5 s and ~160 labels in 20 s
    assert accuracy >= 50 and announced <= cards  # a working model, not chance (10%)
    assert p50 <= p99
    # and the model is kept for the next run
    assert (tmp_path / "demo" / "runs" / "demo" / "model.safetensors").is_file()


@pytest.fixture
def untrained_checkpoint(tmp_path):
    """A loadable checkpoint; which weights it holds does not matter to the cache."""
    from sightd.checkpoint import ModelInfo, save_checkpoint
    from sightd.model import create_model

    path = tmp_path / "untrained.safetensors"
    info = ModelInfo("seed", [str(d) for d in range(10)], 32, [0.5] * 3, [0.5] * 3)
    save_checkpoint(path, create_model("seed", 10).eval(), info)
    return path


def fake_cached_run(runs_dir, checkpoint, epochs: int):
    run_dir = runs_dir / "demo"
    run_dir.mkdir(parents=True)
    shutil.copy(checkpoint, run_dir / "model.safetensors")
    trained = demo_train_config(runs_dir, runs_dir, epochs)
    config = {key: getattr(trained, key) for key in CACHE_KEYS}
    (run_dir / "metrics.json").write_text(json.dumps({"config": config}))
    (run_dir / "split.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    return run_dir


def test_a_cached_model_trained_the_same_way_is_reused(tmp_path, untrained_checkpoint, capsys):
    # given a cached run trained with 2 epochs, and no data set at all
    run_dir = fake_cached_run(tmp_path / "runs", untrained_checkpoint, epochs=2)
    # when the demo asks for a 2-epoch model, it gets the cached one without training
    assert prepare_model(tmp_path / "runs", tmp_path / "no-data", 2, retrain=False) == run_dir
    assert "reusing the trained model" in capsys.readouterr().out
    # when it asks for another number of epochs, or --retrain, it trains (and needs data)
    for epochs, retrain in ((3, False), (2, True)):
        with pytest.raises(SightdError, match="no-data does not exist"):
            prepare_model(tmp_path / "runs", tmp_path / "no-data", epochs, retrain)
    # and a model cached before the demo trained on augmentation is trained again
    metrics = run_dir / "metrics.json"
    metrics.write_text(json.dumps({"config": {"epochs": 2, "image_size": 32}}))
    with pytest.raises(SightdError, match="no-data does not exist"):
        prepare_model(tmp_path / "runs", tmp_path / "no-data", 2, retrain=False)


@pytest.mark.slow
def test_demo_keep_stays_up_after_its_score_with_teach_on_the_demo_s_data(
    tmp_path, untrained_checkpoint
):
    # given the digits and a cached demo run (untrained weights: the test is of the console,
    # not of the score) whose test split holds two cards of each digit
    workdir = tmp_path / "demo"
    data = prepare_digits(workdir / "digits")
    run_dir = fake_cached_run(workdir / "runs", untrained_checkpoint, epochs=2)
    cards = [f"{d}/{p.name}" for d in range(10) for p in sorted((data / str(d)).iterdir())[:2]]
    (run_dir / "split.json").write_text(json.dumps({"train": [], "val": [], "test": cards}))
    command = [sys.executable, "-m", "sightd", "demo", "--keep", "--seconds", "5", "--epochs", "2"]
    demo = subprocess.Popen(
        [*command, "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)
    reader.start()
    try:
        # when its scored pass is over, it prints its score, then the console's URL, and stays
        invite = wait_for(
            lambda: next((line for line in lines if "keep running at" in line), None),
            240,
            "the demo to say it keeps running",
            lambda: "".join(lines)[-3000:],
        )
        assert any(SUMMARY.match(line.strip()) for line in lines), "".join(lines)[-3000:]
        url = re.search(r"keep running at (http://\S+/)", invite).group(1)
        assert demo.poll() is None
        # then the console answers, and Teach works on the demo's own data set and runs
        assert httpx.get(url, timeout=10).status_code == 200
        classes = httpx.get(f"{url}api/teach/classes", timeout=10).json()["classes"]
        assert [(c["name"], c["count"]) for c in classes] == [
            (str(d), sum(1 for _ in (data / str(d)).iterdir())) for d in range(10)
        ]
        teach = httpx.get(f"{url}api/teach", timeout=10).json()
        latest = workdir / "runs" / "latest"
        assert (teach["data_dir"], teach["out_dir"]) == (str(data), str(workdir / "runs"))
        assert (teach["model_path"], teach["reload"]) == (str(latest / "model.safetensors"), True)
        assert os.readlink(latest) == "demo"  # deploy can swap this link: it is not refused
        served = httpx.get(f"{url}api/teach/served", timeout=10).json()
        assert served["exists"] and served["run"] == "demo", served
        # when Ctrl-C reaches it (the terminal signals the whole group), it stops cleanly
        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(60) == 0, "".join(lines)[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)


def test_cards_never_repeat_back_to_back_even_where_the_video_loops():
    classes = [str(d) for d in range(10)]
    for count in range(4, 40):
        order = card_order(classes, count)
        assert len(order) == count
        assert all(a != b for a, b in zip(order, order[1:] + order[:1], strict=True))
        if count >= 10:
            assert set(order[:10]) == set(classes)  # every digit shows up, round after round


def test_the_judge_counts_whole_cards_seen_and_names_wrong_events():
    # given 4-frame cards "a b c" and labels for frames 2..13 (cards 1 and 2 seen whole)
    labels = [{"seq": s, "captured_at": s / 4, "received_at": s / 4 + 0.01} for s in range(2, 14)]
    events = [
        {"seq": 3, "label": "x"},  # card 0, only partly seen: not scored, but still wrong
        {"seq": 5, "label": "b"},  # card 1: right
        {"seq": 8, "label": "unknown"},  # card 2: nothing recognised is never wrong
        {"seq": 9, "label": "b"},  # card 2: b is gone; the event came from a frame of c
        {"seq": 10, "label": "c"},  # card 2: right
    ]
    events = [{"confidence": 0.9, "previous": None, **e, "received_at": 9.0} for e in events]
    # when the events are scored
    result = score(Heard(labels, events), ["a", "b", "c"], frames_per_card=4)
    # then both whole cards were announced, with two wrong events and one to unknown
    assert (result.cards, result.announced, result.wrong_events) == (2, 2, 2)
    assert [(w["seq"], w["label"], w["shown"]) for w in result.wrong] == [
        (3, "x", ["a"]),
        (9, "b", ["c"]),
    ]
    assert result.unknown_events == 1 and result.accuracy == 1.0
    assert SUMMARY.match(result.summary()).groups()[5:] == ("10", "10", "12")


def test_in_a_cross_fade_both_classes_are_on_screen_and_the_empty_desk_names_none():
    # given a 10-frame video: desk (0-3), fading (3-4) into card a (4-9, fully from frame 5)
    segments = [Segment(None, 0, 0, 4), Segment("a", 3, 5, 9)]
    labels = [{"seq": s, "captured_at": float(s), "received_at": s + 0.01} for s in range(10)]
    events = [
        {"seq": 2, "label": "a"},  # on the empty desk: wrong
        {"seq": 3, "label": "a"},  # in the fade, a is partly on screen: not wrong, announces a
        {"seq": 4, "label": "b"},  # in the fade, b is not on screen: wrong
    ]
    events = [{"confidence": 0.9, "previous": None, "received_at": 6.5, **e} for e in events]
    # when judged
    result = judge(Heard(labels, events), segments, video_frames=10)
    # then two events are wrong, a was announced, and its latency runs from its first fully
    # visible frame (captured at 5.0) to the event's arrival (6.5)
    assert [(w["seq"], w["in_fade"]) for w in result.wrong] == [(2, False), (4, True)]
    assert (result.cards, result.announced, result.empty) == (1, 1, 1)
    assert result.event_latencies_s == [1.5]
