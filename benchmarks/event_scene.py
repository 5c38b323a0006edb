"""The scene event_accuracy.py films: held-out cards and an empty desk, as a camera sees them.

A timeline of stretches, each fully visible for HOLD_S seconds and cross-faded into the next
over FADE_S: a held-out digit card (moving, tilted, under changing light, sometimes going out
of focus or partly covered by a hand), or the empty desk with no class at all. Every effect is
a function of time in seconds and of the stretch's own seeded draw, so the video written at
2 fps and the one at 10 fps show the same content at the same moments.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sightd.demo.score import Segment
from sightd.demo.video import card_order
from sightd.images import read_image

SIZE = (320, 240)  # width, height: a small 4:3 camera; the worker keeps the centre square
HOLD_S = 3.0  # each stretch fully visible
FADE_S = 0.5  # cross-fade from one stretch to the next
EMPTY_EVERY = 4  # every 4th stretch (and the first and last) is the empty desk
DESK = 34.0  # the desk's mean level: the black card shows up darker on it
SKIN = (110.0, 140.0, 190.0)  # BGR of the covering hand
START_S = 0.25  # frame i is the scene at START_S + i / fps: at 2 fps a frame falls mid-fade


@dataclass(frozen=True)
class Stretch:
    label: str | None  # None: the empty desk
    card: Path | None
    visible_at: float  # seconds: first fully visible; the fade-in is the FADE_S before it
    seed: int

    @property
    def ends_at(self) -> float:  # the fade-out to the next stretch starts here
        return self.visible_at + HOLD_S


def plan_scene(cards: dict[str, list[Path]], seconds: float) -> list[Stretch]:
    """About `seconds` of stretches: classes in shuffled rounds (never twice in a row), each
    card a different held-out image, the empty desk first, last and every EMPTY_EVERY-th."""
    count = max(3, int(seconds // (HOLD_S + FADE_S)))
    empty = [i == 0 or i == count - 1 or i % EMPTY_EVERY == 0 for i in range(count)]
    labels = iter(card_order(sorted(cards), count - sum(empty)))
    used: dict[str, int] = {}
    stretches = []
    for i in range(count):
        label = None if empty[i] else str(next(labels))
        card = None
        if label is not None:
            card = cards[label][used.get(label, 0) % len(cards[label])]
            used[label] = used.get(label, 0) + 1
        stretches.append(Stretch(label, card, i * (HOLD_S + FADE_S), seed=i))
    return stretches


def scene_seconds(stretches: list[Stretch]) -> float:
    return stretches[-1].ends_at  # the last stretch (the desk) cuts to the first (the desk)


def frame_time(index: int, fps: float) -> float:
    return START_S + index / fps


def weights(stretches: list[Stretch], t: float) -> list[tuple[Stretch, float]]:
    """The stretches on screen at time t, with their share of the picture (summing to 1)."""
    out = []
    for s in stretches:
        if s.visible_at <= t < s.ends_at:
            return [(s, 1.0)]
        if s.visible_at - FADE_S < t < s.visible_at:
            out.append((s, (t - s.visible_at + FADE_S) / FADE_S))
        elif s.ends_at <= t < s.ends_at + FADE_S:
            out.append((s, 1.0 - (t - s.ends_at) / FADE_S))
    total = sum(w for _, w in out)
    return [(s, w / total) for s, w in out]


def segments(stretches: list[Stretch], fps: float) -> tuple[list[Segment], int]:
    """The judge's view of the video at `fps`: each stretch's frames, and the frame count."""
    frames = int(round(scene_seconds(stretches) * fps))
    seen: dict[int, list[int]] = {}
    visible: dict[int, int] = {}
    for i in range(frames):
        for s, w in weights(stretches, frame_time(i, fps)):
            seen.setdefault(s.seed, []).append(i)
            if w >= 1.0:
                visible.setdefault(s.seed, i)
    out = [
        Segment(s.label, seen[s.seed][0], visible.get(s.seed, seen[s.seed][0]), seen[s.seed][-1])
        for s in stretches
        if s.seed in seen
    ]
    return out, frames


def write_scene(path: Path, stretches: list[Stretch], fps: float) -> int:
    """The scene as an MJPG .avi at `fps` (played one frame per publish); returns its frames."""
    frames = int(round(scene_seconds(stretches) * fps))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}: OpenCV has no MJPG writer")
    painter = Painter()
    try:
        for i in range(frames):
            writer.write(painter.frame(stretches, frame_time(i, fps)))
    finally:
        writer.release()
    return frames


class Painter:
    """Renders frames; keeps the desk texture and the decoded cards."""

    def __init__(self):
        width, height = SIZE
        rng = np.random.default_rng(3)
        blotches = cv2.resize(rng.normal(0, 6, (6, 8)), SIZE, interpolation=cv2.INTER_CUBIC)
        grain = cv2.GaussianBlur(rng.normal(0, 10, (height, width)), (0, 0), sigmaX=9, sigmaY=1)
        self.desk = np.repeat((DESK + blotches + grain)[..., None], 3, axis=2).astype(np.float32)
        self.desk *= np.float32([0.8, 0.9, 1.0])  # a warm wooden tone
        self._cards: dict[Path, np.ndarray] = {}

    def frame(self, stretches: list[Stretch], t: float) -> np.ndarray:
        shown = weights(stretches, t)
        picture = sum(w * self.paint(s, t) for s, w in shown)
        sigma = sum(w * _draw(s, "noise", 4.0, 12.0) for s, w in shown)
        noise_rng = np.random.default_rng(int(t * 1000))  # same noise at the same moment
        picture = picture + noise_rng.normal(0, sigma, picture.shape)
        return np.clip(picture, 0, 255).astype(np.uint8)

    def paint(self, s: Stretch, t: float) -> np.ndarray:
        """Stretch `s` at time t, before sensor noise: desk, card, hand, light, focus."""
        u = (t - s.visible_at + FADE_S) / (HOLD_S + 2 * FADE_S)  # 0..1 over its time on screen
        picture = self.desk.copy()
        if s.card is not None:
            self._card(picture, s, t)
        if _draw(s, "covered", 0, 1) < 0.35:
            self._hand(picture, s, u)
        picture = self._light(picture, s, u)
        if _draw(s, "blurred", 0, 1) < 0.35:  # focus hunting: soft in the middle of its time
            sigma = _draw(s, "blur", 2.0, 6.0) * math.sin(math.pi * u) ** 2
            if sigma > 0.3:
                picture = cv2.GaussianBlur(picture, (0, 0), sigma)
        return picture

    def _card(self, picture: np.ndarray, s: Stretch, t: float) -> None:
        """The card, held by a hand: a size of its own, drifting and tilted; cut at the edge."""
        width, height = SIZE
        image = self._cards.get(s.card)
        if image is None:
            image = self._cards[s.card] = read_image(s.card).astype(np.float32)
        side = _draw(s, "size", 0.82, 0.95) * height
        reach = 0.07 * side
        x = width / 2 + reach * math.sin(2 * math.pi * t / _draw(s, "period x", 2.5, 5.0))
        y = height / 2 + reach * math.sin(2 * math.pi * t / _draw(s, "period y", 3.0, 6.0) + 1)
        angle = _draw(s, "tilt", -6.0, 6.0) + 2.0 * math.sin(t * 1.3)
        matrix = cv2.getRotationMatrix2D((image.shape[1] / 2, image.shape[0] / 2), angle, 1.0)
        matrix *= side / image.shape[0]
        matrix[:, 2] += (x - side / 2, y - side / 2)
        card = cv2.warpAffine(image, matrix, SIZE, flags=cv2.INTER_CUBIC)
        ones = np.ones(image.shape[:2], np.float32)
        mask = cv2.warpAffine(ones, matrix, SIZE, flags=cv2.INTER_LINEAR)[..., None]
        picture *= 1 - mask
        picture += mask * card

    def _hand(self, picture: np.ndarray, s: Stretch, u: float) -> None:
        """A hand coming in from one side in the middle of the stretch, then going again,
        covering up to a share of the card's side."""
        width, height = SIZE
        depth = (
            _draw(s, "cover", 0.15, 0.3) * height * max(0.0, math.sin(math.pi * (u - 0.2) / 0.6))
        )
        if not 0.2 < u < 0.8 or depth < 1:
            return
        side = int(_draw(s, "side", 0, 4))
        card_edge = (width - 0.9 * height) / 2  # where the card's left edge roughly is
        along = _draw(s, "along", 0.3, 0.7)
        centres = {  # the hand's centre: beyond the edge, reaching in by `depth`
            0: (card_edge + depth - 70, along * height),
            1: (width - card_edge - depth + 70, along * height),
            2: (width * along, 0.05 * height + depth - 70),
            3: (width * along, 0.95 * height - depth + 70),
        }
        cx, cy = centres[side]
        cv2.ellipse(picture, (int(cx), int(cy)), (70, 45), 90 * (side >= 2), 0, 360, SKIN, -1)

    def _light(self, picture: np.ndarray, s: Stretch, u: float) -> np.ndarray:
        """Exposure drifting over the stretch, and light falling off across the frame."""
        width = SIZE[0]
        start, end = _draw(s, "gain start", 0.6, 1.25), _draw(s, "gain end", 0.6, 1.25)
        slope = _draw(s, "side light", -0.35, 0.35)
        across = 1 + slope * (np.arange(width, dtype=np.float32) / width - 0.5)
        return picture * ((start + (end - start) * u) * across)[None, :, None]


def _draw(s: Stretch, what: str, low: float, high: float) -> float:
    """The stretch's own draw of one parameter: the same whatever else is drawn or the fps."""
    rng = np.random.default_rng([s.seed, zlib.crc32(what.encode())])
    return float(rng.uniform(low, high))
