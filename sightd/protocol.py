"""The wire protocol (docs/protocol.md): every message sightd sends, packed and unpacked here.

Frames:  [b"frame.<camera>", msgpack header, raw payload (JPEG or BGR pixels)]
Others:  [b"<kind>.<name>", msgpack body] for kind in label, event, status
Everything else calls these pure functions; unpacking validates and raises ProtocolError.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import cv2
import msgpack
import numpy as np

from sightd.images import decode_jpeg, jpeg_header, jpeg_scale, reduced_shape

VERSION = 1
KINDS = ("frame", "label", "event", "status")
ENCODINGS = ("jpeg", "bgr24")
MAX_SIDE = 8192  # pixels; larger declared frames are hostile or broken
# libjpeg keeps a progressive JPEG's coefficients for the whole image, whatever the output
# scale, so a large one costs memory a reduced decode would save (README: security). Cameras
# send baseline JPEG.
MAX_PROGRESSIVE_PIXELS = 4096 * 4096
MAX_HEADER_BYTES = 64 * 1024
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_LIMITS = dict(  # msgpack decoding limits: no message can make us allocate much
    max_str_len=64 * 1024,
    max_bin_len=0,
    max_array_len=4096,
    max_map_len=4096,
    max_ext_len=0,
)


class ProtocolError(ValueError):
    """A message that does not follow the protocol; it is counted and dropped."""


def topic(kind: str, name: str) -> bytes:
    return f"{kind}.{name}".encode()


def split_topic(raw: bytes) -> tuple[str, str]:
    try:
        kind, _, name = bytes(raw).decode("ascii").partition(".")
    except UnicodeDecodeError:
        raise ProtocolError("topic is not ASCII") from None
    if kind not in KINDS or not _NAME.match(name):
        raise ProtocolError(f"bad topic {bytes(raw)[:40]!r}")
    return kind, name


def _unpack_body(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError("message body too large")
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=True, **_LIMITS)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"bad msgpack: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise ProtocolError("body is not a map")
    if body.get("v") != VERSION:
        raise ProtocolError(f"unsupported protocol version {body.get('v')!r}")
    return body


# ---- frames ---------------------------------------------------------------------------------


def encode_image(frame_bgr: np.ndarray, encoding: str = "jpeg", quality: int = 90) -> bytes:
    if encoding == "bgr24":
        return np.ascontiguousarray(frame_bgr, dtype=np.uint8).tobytes()
    ok, buf = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def pack_frame(
    camera: str,
    seq: int,
    frame_bgr: np.ndarray,
    captured_at: float,
    encoding: str = "jpeg",
    quality: int = 90,
) -> list[bytes]:
    height, width = frame_bgr.shape[:2]
    payload = encode_image(frame_bgr, encoding, quality)
    return pack_encoded_frame(camera, seq, payload, width, height, captured_at, encoding)


def pack_encoded_frame(
    camera: str,
    seq: int,
    payload: bytes,
    width: int,
    height: int,
    captured_at: float,
    encoding: str = "jpeg",
) -> list[bytes]:
    """A frame whose payload is encoded already (a camera's own JPEG, passed on as it is)."""
    header = {
        "v": VERSION,
        "camera": camera,
        "seq": seq,
        "captured_at": captured_at,
        "width": width,
        "height": height,
        "encoding": encoding,
    }
    return [topic("frame", camera), msgpack.packb(header), payload]


def unpack_frame(parts: Sequence[bytes]) -> tuple[dict[str, Any], bytes]:
    """Validate a frame message; returns (header, payload) without decoding the image."""
    if len(parts) != 3:
        raise ProtocolError(f"frame has {len(parts)} parts, expected 3")
    kind, name = split_topic(parts[0])
    if kind != "frame":
        raise ProtocolError(f"expected a frame topic, got {kind}")
    header = _unpack_body(parts[1])
    _check_fields(header, {"camera": str, "seq": int, "width": int, "height": int})
    if not isinstance(header.get("captured_at"), (int, float)):
        raise ProtocolError("captured_at must be a number")
    if header["camera"] != name:
        raise ProtocolError("camera does not match topic")
    if header.get("encoding") not in ENCODINGS:
        raise ProtocolError(f"unknown encoding {str(header.get('encoding'))[:20]!r}")
    if not (0 < header["width"] <= MAX_SIDE and 0 < header["height"] <= MAX_SIDE):
        raise ProtocolError("frame size out of bounds")
    if header["seq"] < 0:
        raise ProtocolError("seq must not be negative")
    payload = parts[2]
    if header["encoding"] == "bgr24" and len(payload) != header["width"] * header["height"] * 3:
        raise ProtocolError("payload size does not match width x height x 3")
    return header, payload


def decode_image(header: dict[str, Any], payload: bytes, min_side: int = 0) -> np.ndarray:
    """The frame as BGR uint8; raises ProtocolError when it does not decode to its size.

    With `min_side` (the model's input size), a JPEG is decoded at the smallest libjpeg scale
    that keeps both sides >= min_side (images.py): the caller resizes to min_side anyway.
    """
    width, height = header["width"], header["height"]
    if header["encoding"] == "bgr24":
        return np.frombuffer(payload, dtype=np.uint8).reshape(height, width, 3)
    # Checked before decoding: imdecode allocates what the file claims, so a tiny JPEG that
    # claims a huge size costs gigabytes (README: security), and it would decode PNG, TIFF, ...
    # as readily as JPEG.
    declared = jpeg_header(payload)
    if declared is None:
        raise ProtocolError("JPEG payload does not decode (no JPEG frame header)")
    if (declared.width, declared.height) != (width, height):
        raise ProtocolError(
            f"JPEG size {declared.width}x{declared.height} does not match the header"
        )
    if declared.progressive and width * height > MAX_PROGRESSIVE_PIXELS:
        raise ProtocolError(
            f"progressive JPEG of {width}x{height} refused: over {MAX_PROGRESSIVE_PIXELS} "
            "pixels it costs hundreds of MB to decode; send baseline JPEG"
        )
    scale = jpeg_scale(width, height, min_side) if min_side else 1
    image = decode_jpeg(payload, scale)
    if image is None:
        raise ProtocolError("JPEG payload does not decode")
    if image.shape != reduced_shape(width, height, scale):
        raise ProtocolError("decoded size does not match the header")
    return image


# ---- labels, events, status -------------------------------------------------------------------


def pack_message(kind: str, name: str, body: dict[str, Any]) -> list[bytes]:
    return [topic(kind, name), msgpack.packb({"v": VERSION, **body})]


def unpack_message(parts: Sequence[bytes]) -> tuple[str, str, dict[str, Any]]:
    """(kind, name, body) of a label, event or status message."""
    if len(parts) != 2:
        raise ProtocolError(f"message has {len(parts)} parts, expected 2")
    kind, name = split_topic(parts[0])
    if kind == "frame":
        raise ProtocolError("frame topic on a two-part message")
    return kind, name, _unpack_body(parts[1])


def label_body(
    camera: str,
    seq: int,
    captured_at: float,
    label: str,
    confidence: float,
    scores: dict[str, float],
    model: dict[str, str],
) -> dict[str, Any]:
    return {
        "camera": camera,
        "seq": seq,
        "captured_at": captured_at,
        "inferred_at": time.time(),
        "label": label,
        "confidence": confidence,
        "scores": scores,
        "model": model,
    }


def event_body(
    camera: str,
    label: str,
    previous: str | None,
    confidence: float,
    seq: int,
    frames: int = 1,
    held_s: float = 0.0,
) -> dict[str, Any]:
    """A stable-label change; confidence is the mean over the `frames` that made it, which
    spanned `held_s` seconds of captured_at, and seq is the last of them."""
    return {
        "camera": camera,
        "type": "changed",
        "label": label,
        "previous": previous,
        "confidence": confidence,
        "frames": frames,
        "held_s": held_s,
        "at": time.time(),
        "seq": seq,
    }


def is_worker(component: str) -> bool:
    """An inference worker's status name: `infer` alone, or `infer:<name>` for each of
    `workers:`."""
    return component == "infer" or component.startswith("infer:")


def status_body(component: str, state: str, **figures: Any) -> dict[str, Any]:
    """state: starting, online, offline or reconnecting; figures: frames_in, dropped, ..."""
    return {"component": component, "state": state, "at": time.time(), **figures}


_REQUIRED = {  # what every reader relies on, beyond unpack_message's own checks
    "label": {"camera": str, "label": str, "confidence": (int, float), "captured_at": (int, float)},
    "event": {"camera": str, "label": str, "confidence": (int, float), "at": (int, float)},
    "status": {"component": str, "state": str, "at": (int, float)},
}


def decode_message(parts: Sequence[bytes] | None) -> dict[str, Any] | None:
    """Any bus message as one dict: its body (a frame's header plus `payload`), `kind`,
    `topic` and `name`; None when it breaks the protocol. Every reader of the bus uses this."""
    if parts is None:
        return None
    try:
        if len(parts) == 3:
            header, payload = unpack_frame(parts)
            return {**header, "payload": payload, "kind": "frame", "name": header["camera"],
                    "topic": f"frame.{header['camera']}"}  # fmt: skip
        kind, name, body = unpack_message(parts)
    except ProtocolError:
        return None
    for key, types in _REQUIRED[kind].items():
        value = body.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            return None
    if kind != "status" and body["camera"] != name:
        return None
    return {**body, "kind": kind, "topic": f"{kind}.{name}", "name": name}


def _check_fields(body: dict[str, Any], fields: dict[str, type]) -> None:
    for key, kind in fields.items():
        value = body.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ProtocolError(f"{key} must be {kind.__name__}")
