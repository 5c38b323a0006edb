"""The demo's camera: held-out digit cards in a known order, filmed with noise and a shaky hand.

Every card holds for FRAMES_PER_CARD frames and differs from the one before (also across the
loop), so frame `seq` of the capture shows order[(seq // FRAMES_PER_CARD) % len(order)]:
the capture numbers the frames it publishes from 0 and plays a file one frame per read.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sightd.errors import SightdError
from sightd.images import read_image
from sightd.trainer.data import load_split

FPS = 8  # camera frames per second: enough for 1.5 s cards, light on 2 CPU cores
FRAMES_PER_CARD = 12  # 1.5 s per card: events need events.stable_frames (3) of them
SIZE = (320, 240)  # width, height: a small 4:3 camera
CARD_FILL = 0.9  # the square card is 90% of the frame's height, as a digit fills its image
DRIFT = 0.06  # the card wanders up to this share of its side off centre (cut at the border)
DESK = 18.0  # the dark desk behind the card, in 0-255 levels
NOISE = 10.0  # sensor noise, standard deviation in 0-255 levels


def held_out_cards(run_dir: Path, data_dir: Path) -> dict[str, list[Path]]:
    """The test-split images of the training run, by class: the model never saw them."""
    cards: dict[str, list[Path]] = {}
    for relative in load_split(run_dir / "split.json")["test"]:
        cards.setdefault(Path(relative).parts[0], []).append(data_dir / relative)
    return cards


def card_order(classes: list[str], count: int, seed: int = 7) -> list[str]:
    """`count` labels, shuffled rounds of every class, never the same twice in a row."""
    rng = np.random.default_rng(seed)
    order: list[str] = []
    while len(order) < count:
        round_ = list(rng.permutation(classes))
        if order and round_[0] == order[-1]:
            round_.append(round_.pop(0))
        order.extend(round_)
    order = order[:count]
    if len(order) > 1 and order[-1] == order[0]:  # the video loops: last must differ from first
        order[-1], order[-2] = order[-2], order[-1]
    return order


def write_demo_video(path: Path, cards: dict[str, list[Path]], seconds: float) -> list[str]:
    """Write about `seconds` of video (MJPG .avi); returns the order of the cards shown."""
    count = max(4, round(seconds * FPS / FRAMES_PER_CARD))
    order = card_order(sorted(cards), count)
    rng = np.random.default_rng(11)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    if not writer.isOpened():
        raise SightdError(f"cannot write the demo video {path}: OpenCV has no MJPG writer")
    try:
        for index, label in enumerate(order):
            choices = cards[label]
            card = read_image(choices[(index // len(cards)) % len(choices)])
            if card is None:
                raise SightdError(f"cannot read the digit image for {label}; use --retrain")
            gain = rng.uniform(0.8, 1.1)  # the light changes from card to card
            for frame_index in range(FRAMES_PER_CARD):
                writer.write(film(card, gain, index * FRAMES_PER_CARD + frame_index, rng))
    finally:
        writer.release()
    return order


def film(card: np.ndarray, gain: float, t: int, rng: np.random.Generator) -> np.ndarray:
    """One camera frame of `card`: a dark desk, the square card drifting a little, noise.

    The card is square and CARD_FILL of the frame's height, drifting about the centre: the
    worker keeps each frame's centre square, so a card stretched to 4:3 would be both distorted
    and cut. The drift takes it up to DRIFT of its side off centre, as a hand holds a card.
    """
    width, height = SIZE
    side = int(height * CARD_FILL)
    frame = np.full((height, width, 3), DESK, np.float32)
    x = (width - side) // 2 + int(DRIFT * side * np.sin(t / 5.0) + rng.uniform(-2, 2))
    y = (height - side) // 2 + int(DRIFT * side * np.cos(t / 7.0) + rng.uniform(-2, 2))
    scaled = cv2.resize(card, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    paste(frame, scaled * gain, x, y)
    frame += rng.normal(0.0, NOISE, frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


def paste(frame: np.ndarray, image: np.ndarray, x: int, y: int) -> None:
    """`image` into `frame` with its top-left corner at (x, y); what falls outside is cut."""
    height, width = frame.shape[:2]
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + image.shape[0], height), min(x + image.shape[1], width)
    if bottom > top and right > left:
        frame[top:bottom, left:right] = image[top - y : bottom - y, left - x : right - x]
