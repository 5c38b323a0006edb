"""Camera-like folder-per-class image sets, drawn procedurally: no download, same bytes per seed.

Three kinds of class, each a 640x480 webcam frame saved as a JPEG of quality 85:

- gestures (`fist`, `open`, `point`): a hand with a forearm held up in front of the camera; it
  moves, grows and turns from frame to frame and casts a soft shadow. As a user's camera
  sees it, the hand is one of a few people's (skin tone, usual sleeve) and behind it is one of
  a few places (rooms, gradients or textured walls with furniture), the same for every class:
  each frame re-frames its place a little (the camera was nudged) and adds clutter that comes
  and goes, sometimes a face at the edge. `places=0` and `people=0` give every frame a
  background and a person of its own instead: a harder set, any room and anyone.
- doors (`door_ajar`, `door_open`, `door_shut`): a camera kept on a doorway. The room and its
  door are one of the setting's places (wall, frame, panel and the room behind fixed per
  place); each frame swings the panel to an angle of its class, turns the light behind the
  door on or off, re-frames the view a little and sometimes has someone walk past or a pet
  sit on the floor.
- textures (`brick`, `grass`, `gravel`): the frame filled with one material, at a random scale
  and angle. Every class draws its colours from the same palettes, so only the structure tells
  them apart, never the mean colour.

Both then go through one camera: uneven light, exposure, white balance, gamma, defocus or
motion blur and sensor noise. Image i of class c under seed s comes from its own generator,
seeded with (s, c, i), so a set of 20 a class is the first 20 of the same set at 50, and
adding a class changes no other class's images. Places and people come from `scene_seed`
alone, so a set of another seed (a held-out set) shows the same places and people in new
frames.

    write_camera_set(root, per_class=50, seed=0, classes=GESTURES, places=3, people=3)
    camera_frame("fist", np.random.default_rng(0), make_setting()) -> BGR uint8 480 x 640 x 3
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

GESTURES = ("fist", "open", "point")
DOORS = ("door_ajar", "door_open", "door_shut")
TEXTURES = ("brick", "grass", "gravel")
HEIGHT, WIDTH = 480, 640
JPEG_QUALITY = 85  # what webcam drivers and browsers typically send

# Finger bases on the palm's top edge and their lengths, in palm units (palm half-width 1),
# index to little finger; the thumb leaves the palm's side.
FINGER_X = (-0.72, -0.24, 0.24, 0.72)
FINGER_LENGTH = (1.5, 1.7, 1.56, 1.2)
FINGER_WIDTH = 0.44
EXTENDED = {"fist": (), "open": (0, 1, 2, 3), "point": (0,)}
DOOR_DEGREES = {
    "door_shut": (0, 5),
    "door_ajar": (30, 55),
    "door_open": (75, 100),
}  # of the panel's swing


def write_camera_set(
    root: str | Path,
    per_class: int,
    seed: int,
    classes: Sequence[str] = GESTURES,
    places: int = 3,
    people: int = 3,
    scene_seed: int = 0,
) -> Path:
    """Write `per_class` JPEG frames of each class as root/<class>/<seed>_<i>.jpg; returns root.

    Gestures are shown by one of `people` in front of one of `places`, and doors are in one of
    the places (make_setting).
    """
    root = Path(root)
    setting = make_setting(places, people, scene_seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            frame = camera_frame(name, frame_rng(seed, name, i), setting)
            (folder / f"{seed}_{i:04d}.jpg").write_bytes(encode_jpeg(frame))
    return root


def frame_rng(seed: int, class_name: str, index: int) -> np.random.Generator:
    """The generator of one image: independent of the other classes and of per_class."""
    return np.random.default_rng([seed, zlib.crc32(class_name.encode()), index])


@dataclass
class Setting:
    """What stays the same for one camera: where it looks and whose hands it sees."""

    places: list[np.ndarray]  # float32 BGR HEIGHT x WIDTH scenes
    people: list[tuple[np.ndarray, np.ndarray]]  # (skin, usual sleeve) colours
    doors: list[Door] = field(default_factory=list)  # one doorway for each place


def make_setting(places: int = 3, people: int = 3, scene_seed: int = 0) -> Setting:
    """`places` scenes and `people` people, from scene_seed alone; 0 of either: a new one for
    every frame."""
    scenes = [background(np.random.default_rng([scene_seed, 7, i])) for i in range(places)]
    rngs = [np.random.default_rng([scene_seed, 11, i]) for i in range(people)]
    doors = [doorway(np.random.default_rng([scene_seed, 13, i])) for i in range(places)]
    return Setting(scenes, [(skin(rng), colour(rng, val=(30, 230))) for rng in rngs], doors)


def camera_frame(
    class_name: str, rng: np.random.Generator, setting: Setting | None = None
) -> np.ndarray:
    """One BGR uint8 HEIGHT x WIDTH frame of a gesture or texture class, as a webcam sees it.

    A gesture is shown by one of the setting's people in front of one of its places,
    re-framed and with clutter of its own (without a setting: a background and a person of
    the frame's own).
    """
    setting = setting or Setting([], [])
    if class_name in EXTENDED:
        places, people = setting.places, setting.people
        scene = reframe(places[rng.integers(len(places))], rng) if places else background(rng)
        for _ in range(int(rng.integers(0, 4))):
            clutter(scene, rng)
        if rng.uniform() < 0.3:
            face(scene, rng)
        tone, sleeve = people[rng.integers(len(people))] if people else (skin(rng), None)
        if sleeve is None or rng.uniform() < 0.3:  # not the usual sleeve today
            sleeve = colour(rng, val=(30, 230))
        draw_hand(scene, class_name, tone * rng.uniform(0.92, 1.08, 3), sleeve, rng)
    elif class_name in DOOR_DEGREES:
        door = setting.doors[rng.integers(len(setting.doors))] if setting.doors else None
        scene = door_scene(door or doorway(rng), class_name, rng)
    elif class_name in TEXTURE_DRAWERS:
        scene = texture(class_name, rng)
    else:
        known = ", ".join(sorted({*EXTENDED, *DOOR_DEGREES, *TEXTURE_DRAWERS}))
        raise ValueError(f"unknown class {class_name!r}; choose from {known}")
    return camera(scene, rng)


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - cv2 always encodes a uint8 BGR frame
        raise RuntimeError("cv2 could not encode a JPEG")
    return data.tobytes()


# --- the camera ----------------------------------------------------------------------------


def camera(scene: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 BGR scene in 0..255 -> uint8 frame: light, exposure, white balance, blur, noise."""
    light = smooth_field(rng, 0.55, 1.35, cells=(3, 4))[..., None]
    gain = rng.uniform(0.55, 1.3) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    image = scene * light * gain
    image = 255.0 * (np.clip(image, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    blur = rng.uniform()
    if blur < 0.35:  # out of focus
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(1.0, 4.0))
    elif blur < 0.5:  # the hand or the camera moved during the exposure
        image = cv2.filter2D(image, -1, motion_kernel(rng))
    noise = rng.normal(0.0, rng.uniform(2.0, 9.0), (HEIGHT // 2, WIDTH // 2, 3)).astype(np.float32)
    image += cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)  # demosaicked
    return np.clip(image, 0, 255).astype(np.uint8)


def motion_kernel(rng: np.random.Generator) -> np.ndarray:
    size = int(rng.integers(5, 17))
    kernel = np.zeros((size, size), np.float32)
    cv2.line(kernel, (0, size // 2), (size - 1, size // 2), 1.0, 1)
    turn = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, turn, (size, size))
    return kernel / kernel.sum()


def smooth_field(rng, low: float, high: float, cells=(3, 4), size=(HEIGHT, WIDTH)) -> np.ndarray:
    """A smooth random float32 field between about low and high (light, stains, hills)."""
    coarse = rng.uniform(low, high, cells).astype(np.float32)
    return cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def colour(rng: np.random.Generator, hue=(0, 180), sat=(0, 255), val=(0, 255)) -> np.ndarray:
    """A float32 BGR colour drawn in HSV ranges (OpenCV's: hue 0..180)."""
    hsv = np.array([[[rng.uniform(*hue) % 180, rng.uniform(*sat), rng.uniform(*val)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


# --- gestures: a hand in front of a background ---------------------------------------------


def background(rng: np.random.Generator) -> np.ndarray:
    """A room (wall, floor, furniture, a window), a gradient or a texture, plus clutter."""
    kind = rng.choice(["room", "gradient", "texture"], p=[0.5, 0.25, 0.25])
    if kind == "texture":
        scene = texture(str(rng.choice(TEXTURES)), rng) * rng.uniform(0.6, 1.0)
    else:
        top, bottom = colour(rng, val=(60, 230)), colour(rng, val=(60, 230))
        ramp = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None, None]
        if kind == "room":  # wall above, floor below the horizon
            ramp = (ramp > rng.uniform(0.55, 0.9)).astype(np.float32)
        scene = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (HEIGHT, WIDTH, 3)).copy()
        scene *= smooth_field(rng, 0.8, 1.2, cells=(6, 8))[..., None]  # stains, paint
    for _ in range(int(rng.integers(2, 7))):
        clutter(scene, rng)
    return scene


def reframe(place: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The place as the camera sees it today: nudged, turned by a degree or two, zoomed."""
    zoom = rng.uniform(1.0, 1.12)
    turn = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), rng.uniform(-2, 2), zoom)
    margin = (zoom - 1) / 2
    turn[:, 2] += rng.uniform(-margin, margin, 2) * (WIDTH, HEIGHT)
    return cv2.warpAffine(place, turn, (WIDTH, HEIGHT), borderMode=cv2.BORDER_REFLECT)


def face(scene: np.ndarray, rng: np.random.Generator) -> None:
    """The user's own face at the edge of the picture: skin that is not a gesture."""
    centre = (int(rng.choice([rng.integers(0, 140), rng.integers(500, 640)])), 80)
    axes = (int(rng.integers(50, 90)), int(rng.integers(70, 110)))
    cv2.ellipse(scene, centre, axes, 0, 0, 360, skin(rng).tolist(), -1, cv2.LINE_AA)


def clutter(scene: np.ndarray, rng: np.random.Generator) -> None:
    """A box, a picture frame, a lamp, a cable: something that is not the subject."""
    paint = colour(rng, val=(30, 250)).tolist()
    x, y = int(rng.integers(-50, WIDTH)), int(rng.integers(-50, HEIGHT))
    w, h = (int(v) for v in rng.integers(20, 220, 2))
    shape = rng.integers(4)
    if shape == 0:
        cv2.rectangle(scene, (x, y), (x + w, y + h), paint, -1)
    elif shape == 1:
        cv2.rectangle(scene, (x, y), (x + w, y + h), paint, int(rng.integers(4, 15)))
    elif shape == 2:
        cv2.circle(scene, (x, y), w // 3, paint, -1, cv2.LINE_AA)
    else:
        points = rng.integers(-50, 700, (4, 2)).astype(np.int32)
        cv2.polylines(scene, [points], False, paint, int(rng.integers(2, 9)), cv2.LINE_AA)


def skin(rng: np.random.Generator) -> np.ndarray:
    return colour(rng, hue=(4, 18), sat=(50, 170), val=(70, 245))


def draw_hand(scene: np.ndarray, gesture: str, tone, sleeve, rng: np.random.Generator) -> None:
    """A hand and forearm held up, in a random place, size and angle, with a soft shadow."""
    scale = rng.uniform(38, 72)  # pixels per palm half-width
    centre = np.array([rng.uniform(200, 440), rng.uniform(230, 330)])
    angle = np.deg2rad(rng.uniform(-25, 25))
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def at(points) -> np.ndarray:  # palm units (y down, palm centre at 0) -> pixels
        return (np.asarray(points, np.float64) @ turn.T * scale + centre).round().astype(np.int32)

    parts = hand_parts(gesture, rng)
    mask = np.zeros((HEIGHT, WIDTH), np.float32)
    draw_parts(mask, parts, at, scale, 1.0, 1.0)
    # blurred at a quarter of the size: the same soft edge, a sixteenth of the work
    small = cv2.resize(mask, (WIDTH // 4, HEIGHT // 4), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), scale * 0.1)
    offset = np.float32([[1, 0, rng.uniform(-0.15, 0.15) * scale], [0, 1, 0.1 * scale]])
    small = cv2.warpAffine(small, offset, (WIDTH // 4, HEIGHT // 4))
    shadow = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    scene *= 1 - rng.uniform(0.1, 0.45) * shadow[..., None]

    arm = [[-0.8, 0.7], [0.8, 0.7], [0.9, 8.0], [-0.9, 8.0]]  # runs off the bottom of the frame
    cv2.fillPoly(scene, [at(arm)], (tone * 0.9).tolist(), cv2.LINE_AA)
    cuff = [[-0.95, 1.6 + rng.uniform(0, 1)], [0.95, 1.6], [1.0, 8.0], [-1.0, 8.0]]
    cv2.fillPoly(scene, [at(cuff)], sleeve.tolist(), cv2.LINE_AA)
    draw_parts(scene, parts, at, scale, (tone * 0.7).tolist(), tone.tolist())
    # light falls on the hand from one side: one half of it brighter, the other darker
    side = rng.uniform(0, 2 * np.pi)
    xs = (np.arange(WIDTH, dtype=np.float32) - centre[0]) * np.cos(side)
    ys = (np.arange(HEIGHT, dtype=np.float32) - centre[1]) * np.sin(side)
    across = (ys[:, None] + xs[None, :]) / (2 * scale)
    scene *= (1 + 0.25 * np.clip(across, -1, 1) * mask)[..., None]


def hand_parts(gesture: str, rng: np.random.Generator) -> list[tuple]:
    """The fingers and thumb of `gesture` as (start, end, extra width) in palm units."""

    def jitter() -> float:
        return rng.uniform(-0.08, 0.08)

    parts = []
    for i, (x, length) in enumerate(zip(FINGER_X, FINGER_LENGTH, strict=True)):
        if i in EXTENDED[gesture]:
            spread = (x * 0.35 if gesture == "open" else 0.0) + jitter()
            length *= 1 + jitter()
            parts.append(
                ([x, -0.85], [x + np.sin(spread) * length, -0.85 - np.cos(spread) * length], 0)
            )
        else:  # curled: a knuckle on the palm's top edge
            parts.append(([x, -0.95], [x, -0.6], 0.1))
    if gesture == "open":  # thumb out to the side
        parts.append(([-0.85, 0.15], [-1.85 + jitter(), -0.55 + jitter()], 0.05))
    else:  # thumb folded across the curled fingers
        parts.append(([-0.9, 0.1], [0.05 + jitter(), -0.3 + jitter()], 0.05))
    return parts


def draw_parts(image: np.ndarray, parts, at, scale: float, edge, fill) -> None:
    """Palm, then each finger: outlined in `edge` (the crease between fingers), filled with
    `fill`."""
    width, outline = max(2, int(FINGER_WIDTH * scale)), max(1, int(0.08 * scale))
    palm = cv2.ellipse2Poly((0, 0), (100, 110), 0, 0, 360, 10).astype(np.float64) / 100
    cv2.fillPoly(image, [at(palm)], edge, cv2.LINE_AA)
    cv2.fillPoly(image, [at(palm * 0.93)], fill, cv2.LINE_AA)
    for start, end, extra in parts:
        a, b = (tuple(int(v) for v in p) for p in at([start, end]))
        thick = width + int(extra * scale)
        cv2.line(image, a, b, edge, thick + 2 * outline, cv2.LINE_AA)
        cv2.line(image, a, b, fill, thick, cv2.LINE_AA)


# --- doors: one doorway, its panel at an angle -----------------------------------------------


@dataclass
class Door:
    """A doorway in a wall: where it is, and what the room and the room behind look like."""

    wall: np.ndarray  # float32 BGR HEIGHT x WIDTH: the room, with the doorway's frame
    behind: np.ndarray  # the same size: what the opening shows, at full light
    left: int
    top: int
    width: int
    bottom: int
    panel: np.ndarray  # BGR colour of the door itself


def doorway(rng: np.random.Generator) -> Door:
    wall = background(rng)
    width, height = int(rng.uniform(0.2, 0.3) * WIDTH), int(rng.uniform(0.6, 0.8) * HEIGHT)
    left = int(rng.uniform(0.25, 0.75) * WIDTH - width / 2)  # inside the centre square
    bottom = int(rng.uniform(0.85, 0.97) * HEIGHT)
    top = bottom - height
    frame = colour(rng, val=(60, 240)).tolist()
    thick = int(rng.integers(8, 18))
    cv2.rectangle(wall, (left - thick, top - thick), (left + width + thick, bottom), frame, -1)
    behind = background(rng) * rng.uniform(0.4, 0.9)  # another room, seldom as bright
    return Door(wall, behind, left, top, width, bottom, colour(rng, val=(40, 230)))


def door_scene(door: Door, state: str, rng: np.random.Generator) -> np.ndarray:
    """The doorway with its panel swung open by an angle of `state`, as the camera sees it."""
    scene = door.wall.copy()
    light = rng.uniform(0.15, 1.3)  # the light behind the door is on, off or in between
    opening = slice(door.top, door.bottom), slice(door.left, door.left + door.width)
    scene[opening] = door.behind[opening] * light
    angle = np.deg2rad(rng.uniform(*DOOR_DEGREES[state]))
    edge = door.left + door.width * np.cos(angle)  # the free edge, hinged on the left
    grow = 0.12 * (door.bottom - door.top) * np.sin(angle)  # nearer the camera: taller
    panel = [(door.left, door.top), (edge, door.top - grow), (edge, door.bottom + grow)]
    panel = np.array([*panel, (door.left, door.bottom)]).round().astype(np.int32)
    paint = door.panel * (1 - 0.35 * np.sin(angle)) * rng.uniform(0.9, 1.1)  # turned from the light
    cv2.fillPoly(scene, [panel], paint.tolist(), cv2.LINE_AA)
    cv2.polylines(scene, [panel], True, (paint * 0.6).tolist(), 3, cv2.LINE_AA)
    knob = (int(door.left + 0.85 * (edge - door.left)), int((door.top + door.bottom) / 2 + 10))
    cv2.circle(scene, knob, 6, (paint * 0.5).tolist(), -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3))):
        clutter(scene, rng)
    if rng.uniform() < 0.25:  # someone walks past, in front of the door or beside it
        passer_by(scene, rng)
    if rng.uniform() < 0.2:  # the cat sits on the floor
        centre = (int(rng.uniform(0, WIDTH)), int(rng.uniform(0.85, 1.0) * HEIGHT))
        pet = colour(rng, sat=(0, 120), val=(30, 200)).tolist()
        cv2.ellipse(scene, centre, (int(rng.uniform(25, 45)), 18), 0, 0, 360, pet, -1)
        cv2.circle(scene, (centre[0] + 35, centre[1] - 20), 14, pet, -1, cv2.LINE_AA)
    return reframe(scene, rng)


def passer_by(scene: np.ndarray, rng: np.random.Generator) -> None:
    """A person: head, body and legs, near the camera or far, at any place across the frame."""
    x, height = rng.uniform(0, WIDTH), rng.uniform(0.6, 1.2) * HEIGHT
    feet = HEIGHT * rng.uniform(0.95, 1.2)
    clothes = colour(rng, val=(20, 220)).tolist()
    head = (int(x), int(feet - height * 0.92))
    cv2.circle(scene, head, int(height * 0.07), skin(rng).tolist(), -1, cv2.LINE_AA)
    body = (
        (int(x - height * 0.12), int(feet - height * 0.84)),
        (int(x + height * 0.12), int(feet)),
    )
    cv2.rectangle(scene, *body, clothes, -1)


# --- textures -------------------------------------------------------------------------------


def texture(name: str, rng: np.random.Generator) -> np.ndarray:
    """The whole frame of one material at a random scale and angle, float32 BGR 0..255.

    Drawn at half the frame's resolution on a square that any rotation keeps over the frame,
    then turned and doubled into it: a quarter of the drawing work, and a webcam's softness.
    """
    size = (int(np.hypot(HEIGHT, WIDTH)) + 8) // 2
    hue = rng.uniform(0, 180)  # one material, in shades near one hue; any hue for any class
    palette = [colour(rng, (hue - 12, hue + 12), (10, 120), (50, 220)) for _ in range(3)]
    canvas = TEXTURE_DRAWERS[name](size, rng.uniform(0.8, 2.0) / 2, palette, rng)
    turn = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-30, 30), 2.0)
    turn[:, 2] += [WIDTH / 2 - size / 2, HEIGHT / 2 - size / 2]
    return cv2.warpAffine(canvas, turn, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)


def vary(base, rng: np.random.Generator, amount: float = 0.2) -> list[float]:
    return (base * rng.uniform(1 - amount, 1 + amount, 3)).tolist()


# Each drawer fills a size x size canvas; `unit` is canvas pixels per frame pixel at this zoom,
# so the sizes below are in pixels of the 640x480 frame.


def brick(size: int, unit: float, palette, rng) -> np.ndarray:
    """Courses of bricks, every other one offset by half a brick, in mortar."""
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = palette[1]  # mortar
    height, length, gap = 40 * unit, 90 * unit, max(1, round(6 * unit))
    for row in range(int(size / height) + 1):
        shift = (row % 2) * length / 2
        for col in range(-1, int(size / length) + 1):
            x, y = col * length + shift, row * height
            corner, far = (int(x), int(y)), (int(x + length) - gap, int(y + height) - gap)
            cv2.rectangle(canvas, corner, far, vary(palette[0], rng), -1)
    return canvas * smooth_field(rng, 0.85, 1.15, (8, 8), (size, size))[..., None]


def grass(size: int, unit: float, palette, rng) -> np.ndarray:
    """Thin blades, mostly upright, each a slightly different shade, over their shadow."""
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = palette[1] * 0.5
    length = rng.uniform(40, 90, int(1.5 * size**2 / (260 * unit**2)))  # ~1.5 deep
    roots = rng.uniform(0, size, (len(length), 2))
    lean = rng.normal(0, 0.35, len(length))
    tips = roots + np.stack([np.sin(lean), -np.cos(lean)], 1) * (length * unit)[:, None]
    width = max(1, round(4 * unit))
    for root, tip in zip(roots.astype(int).tolist(), tips.astype(int).tolist(), strict=True):
        paint = vary(palette[int(rng.integers(2))], rng, 0.3)
        cv2.line(canvas, tuple(root), tuple(tip), paint, width, cv2.LINE_AA)
    return canvas


def gravel(size: int, unit: float, palette, rng) -> np.ndarray:
    """Rounded stones of many sizes and shades, packed, each lit from above."""
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = palette[2] * 0.4  # the gaps between stones
    count = int(1.8 * size**2 / (1250 * unit**2))
    centres = rng.uniform(0, size, (count, 2)).astype(int).tolist()
    axes = np.maximum(1, rng.uniform(10, 30, (count, 2)) * unit).astype(int).tolist()
    for centre, (a, b) in zip(centres, axes, strict=True):
        paint = np.asarray(vary(palette[int(rng.integers(3))], rng, 0.35), np.float32)
        tilt = rng.uniform(0, 180)
        cv2.ellipse(canvas, centre, (a, b), tilt, 0, 360, (paint * 0.6).tolist(), -1, cv2.LINE_AA)
        top = (centre[0], centre[1] - max(1, b // 5))
        small = (max(1, int(a * 0.75)), max(1, int(b * 0.75)))
        cv2.ellipse(canvas, top, small, tilt, 0, 360, paint.tolist(), -1, cv2.LINE_AA)
    return canvas


TEXTURE_DRAWERS = {"brick": brick, "grass": grass, "gravel": gravel}
