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

import pytest

from sightd.daemon.demo import DEMO_IMAGE_SIZE, prepare_model
from sightd.daemon.demo_score import Heard, score
from sightd.daemon.demo_video import card_order
from sightd.errors import SightdError

SUMMARY = re.compile(
    r"^event accuracy (\d+)% \((\d+) of (\d+) cards announced in order, (\d+) wrong events\); "
    r"latency capture to subscriber p50 (\d+) ms, p99 (\d+) ms over (\d+) labels$"
)


@pytest.mark.slow
def test_demo_trains_runs_the_pipeline_and_ends_with_its_accuracy_line(tmp_path):
    # given a fresh work folder (no data, no model); 2 epochs keep the test short
    command = [sys.executable, "-m", "sightd", "demo", "--seconds", "20", "--epochs", "2"]
    demo = subprocess.Popen(
        [*command, "--workdir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
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
    assert any("training the seed ResNet on digits: 2 epochs" in line for line in lines)
    assert any("pipeline up after" in line for line in lines)
    assert sum("(was " in line for line in lines) >= 5  # events, from the print subscriber
    summary = SUMMARY.match(lines[-1])
    assert summary, lines[-1]
    accuracy, announced, cards, _, p50, p99, labels = map(int, summary.groups())
    assert cards >= 8 and labels >= 80  # ~13 cards of 1.5 s and ~160 labels in 20 s
    assert accuracy >= 50 and announced <= cards  # a working model, not chance (10%)
    assert p50 <= p99
    # and the model is kept for the next run
    assert (tmp_path / "demo" / "runs" / "demo" / "model.safetensors").is_file()


def fake_cached_run(runs_dir, checkpoint, epochs: int):
    run_dir = runs_dir / "demo"
    run_dir.mkdir(parents=True)
    shutil.copy(checkpoint, run_dir / "model.safetensors")
    config = {"epochs": epochs, "image_size": DEMO_IMAGE_SIZE}
    (run_dir / "metrics.json").write_text(json.dumps({"config": config}))
    (run_dir / "split.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    return run_dir


def test_a_cached_model_trained_the_same_way_is_reused(tmp_path, color_checkpoint, capsys):
    # given a cached run trained with 2 epochs, and no data set at all
    run_dir = fake_cached_run(tmp_path / "runs", color_checkpoint, epochs=2)
    # when the demo asks for a 2-epoch model, it gets the cached one without training
    assert prepare_model(tmp_path / "runs", tmp_path / "no-data", 2, retrain=False) == run_dir
    assert "reusing the trained model" in capsys.readouterr().out
    # when it asks for another number of epochs, or --retrain, it trains (and needs data)
    for epochs, retrain in ((3, False), (2, True)):
        with pytest.raises(SightdError, match="no-data does not exist"):
            prepare_model(tmp_path / "runs", tmp_path / "no-data", epochs, retrain)


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
    labels = [{"seq": s, "captured_at": 0.0, "received_at": 0.01} for s in range(2, 14)]
    events = [
        {"seq": 3, "label": "a"},  # card 0, only partly seen: not judged
        {"seq": 5, "label": "b"},  # card 1: right
        {"seq": 9, "label": "x"},  # card 2: wrong...
        {"seq": 10, "label": "c"},  # ...then right
    ]
    # when the events are scored
    result = score(Heard(labels, events), ["a", "b", "c"], frames_per_card=4)
    # then both whole cards were announced, with one wrong event; latency is 10 ms
    assert (result.cards, result.announced, result.wrong_events) == (2, 2, 1)
    assert result.accuracy == 1.0
    assert SUMMARY.match(result.summary()).groups()[4:] == ("10", "10", "12")
