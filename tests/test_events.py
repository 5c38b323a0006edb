"""Debouncing: a label change is announced once it has held long enough, in frames and in
capture time, confidently enough; never on a flicker, and never on a few unsure frames."""

import pytest

from sightd.publishers.events import Debouncer, decide_label

FPS = 10  # frames are 0.1 s apart in captured_at unless a test says otherwise


def frames(*runs, start=1000.0):
    """(label, confidence, captured_at) of consecutive frames at FPS; each run is
    (label, count) or (label, count, confidence)."""
    out = []
    for run in runs:
        label, count, confidence = (*run, 0.9) if len(run) == 2 else run
        out += [(label, confidence, start + (len(out) + i) / FPS) for i in range(count)]
    return out


def changes(feed, stable_frames=3, min_hold_s=0.0, start_confidence=0.0):
    """Every Change the debouncer reports for `feed`, as it would reach subscribers."""
    debouncer = Debouncer(stable_frames, min_hold_s, start_confidence)
    return [change for frame in feed if (change := debouncer.update(*frame))]


def transitions(feed, **rules):
    return [(change.previous, change.label) for change in changes(feed, **rules)]


def test_the_first_stable_label_is_announced_as_a_change_from_none():
    assert transitions(frames(("red", 4))) == [(None, "red")]


def test_a_new_label_must_hold_for_stable_frames_before_it_is_announced():
    feed = frames(("red", 3), ("blue", 2), ("red", 1), ("blue", 3))
    assert transitions(feed) == [(None, "red"), ("red", "blue")]


def test_flicker_between_two_labels_never_triggers_anything():
    assert transitions(frames(("red", 3), *[("blue", 1), ("red", 1)] * 10)) == [(None, "red")]


def test_one_stable_frame_announces_every_change():
    feed = frames(("a", 1), ("b", 2), ("a", 1))
    assert transitions(feed, stable_frames=1) == [(None, "a"), ("a", "b"), ("b", "a")]


def test_min_hold_s_is_counted_in_capture_time_not_in_frames_or_wall_clock():
    # given a 1 s hold and frames 0.1 s apart in captured_at, fed all at once (no real time)
    rules = {"stable_frames": 3, "min_hold_s": 1.0}
    # when red shows for 10 frames (0.9 s from the first to the last), then for 11 (1.0 s)
    short, enough = changes(frames(("red", 10)), **rules), changes(frames(("red", 11)), **rules)
    # then 0.9 s is not enough, and the event comes with the frame that completes 1.0 s
    assert short == []
    assert [(c.label, c.frames, round(c.held_s, 6)) for c in enough] == [("red", 11, 1.0)]


def test_frames_far_apart_in_capture_time_still_need_stable_frames():
    # given frames 2 s apart (a slow camera) and a 1 s hold
    feed = [("red", 0.9, 1000.0 + 2 * i) for i in range(3)]
    # then the hold is met at the second frame, but the third is the one that announces it
    assert [c.frames for c in changes(feed, stable_frames=3, min_hold_s=1.0)] == [3]


def test_a_flicker_of_unknown_inside_a_stable_label_produces_no_events():
    # given red is the stable label
    feed = frames(("red", 6))
    # when unknown keeps interrupting it for 4 frames (0.3 s), enough frames but not long enough
    for _ in range(10):
        feed += frames(("unknown", 4, 0.3), ("red", 1), start=feed[-1][2] + 0.1)
    # then red stays the stable label: nothing is announced after it
    assert transitions(feed, min_hold_s=0.5) == [(None, "red")]


def test_unknown_becomes_the_stable_label_when_it_holds_like_any_label():
    # given red is stable, when nothing is recognised for long enough (at any confidence)
    feed = frames(("red", 6, 0.9), ("unknown", 6, 0.2))
    # then the state says so honestly: an event to unknown
    assert transitions(feed, min_hold_s=0.5, start_confidence=0.8) == [
        (None, "red"),
        ("red", "unknown"),
    ]


def test_a_low_confidence_run_does_not_start_a_label():
    # given a 0.7 start confidence, when red holds for a long time at 0.6
    feed = frames(("red", 50, 0.6))
    # then red never becomes the stable label
    assert transitions(feed, start_confidence=0.7) == []


def test_a_run_that_grows_confident_starts_once_its_mean_is_high_enough():
    # given a 0.7 start confidence, when red starts unsure (0.5) and then is seen clearly (0.9)
    feed = frames(("red", 3, 0.5), ("red", 10, 0.9))
    # then it starts at the first frame where the mean of the run reaches 0.7: the 6th
    (change,) = changes(feed, start_confidence=0.7)
    assert change.frames == 6 and change.confidence == pytest.approx(0.7)


def test_the_events_confidence_is_the_mean_of_the_frames_that_made_it():
    feed = [("red", 0.6, 1000.0), ("red", 0.8, 1000.1), ("red", 1.0, 1000.2)]
    (change,) = changes(feed)
    assert change.confidence == pytest.approx(0.8)
    assert change.frames == 3 and change.held_s == pytest.approx(0.2)


def test_a_candidate_interrupted_by_one_other_frame_starts_again():
    # given red is stable, when blue holds two frames, one green frame comes, then blue again
    feed = frames(("red", 3), ("blue", 2), ("green", 1), ("blue", 2))
    # then blue has not yet held three frames in a row: no change
    assert transitions(feed) == [(None, "red")]
    # and its third frame in a row after the interruption announces it
    assert transitions(feed + frames(("blue", 1), start=feed[-1][2] + 0.1))[-1] == ("red", "blue")


def test_a_clock_that_goes_back_restarts_the_run_rather_than_stalling_it():
    # given captured_at jumps back an hour in the middle of a run, with a 0.5 s hold
    feed = frames(("red", 3)) + frames(("red", 10), start=1000.0 - 3600)
    # then red is announced 0.5 s after the jump, not an hour later
    (change,) = changes(feed, min_hold_s=0.5)
    assert change.frames == 6


@pytest.mark.parametrize(("confidence", "expected"), [(0.49, "unknown"), (0.5, "red")])
def test_below_min_confidence_the_label_is_unknown(confidence, expected):
    assert decide_label("red", confidence, min_confidence=0.5) == expected
