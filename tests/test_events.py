"""Debouncing: a label change is announced once it has held, never on a flicker."""

import pytest

from sightd.publishers.events import Debouncer, decide_label


def changes(labels, stable_frames=3):
    debouncer = Debouncer(stable_frames)
    return [change for label in labels if (change := debouncer.update(label))]


def test_the_first_stable_label_is_announced_as_a_change_from_none():
    assert changes(["red", "red", "red", "red"]) == [(None, "red")]


def test_a_new_label_must_hold_for_stable_frames_before_it_is_announced():
    labels = ["red"] * 3 + ["blue"] * 2 + ["red"] + ["blue"] * 3
    assert changes(labels) == [(None, "red"), ("red", "blue")]


def test_flicker_between_two_labels_never_triggers_anything():
    assert changes(["red"] * 3 + ["blue", "red"] * 10) == [(None, "red")]


def test_one_stable_frame_announces_every_change():
    assert changes(["a", "b", "b", "a"], stable_frames=1) == [(None, "a"), ("a", "b"), ("b", "a")]


@pytest.mark.parametrize(("confidence", "expected"), [(0.49, "unknown"), (0.5, "red")])
def test_below_min_confidence_the_label_is_unknown(confidence, expected):
    assert decide_label("red", confidence, min_confidence=0.5) == expected
