"""The wire protocol: what is packed unpacks unchanged; what breaks the contract is refused."""

import msgpack
import numpy as np
import pytest
from conftest import color_frame

from sightd.protocol import (
    MAX_HEADER_BYTES,
    VERSION,
    ProtocolError,
    decode_image,
    event_body,
    label_body,
    pack_frame,
    pack_message,
    status_body,
    unpack_frame,
    unpack_message,
)

FRAME = color_frame("green", (48, 64))


def header(**changes) -> bytes:
    fields = {"v": VERSION, "camera": "cam0", "seq": 1, "captured_at": 1.5}
    fields |= {"width": 64, "height": 48, "encoding": "bgr24"}
    return msgpack.packb({**fields, **changes})


def test_a_raw_frame_round_trips_pixel_for_pixel():
    parts = pack_frame("cam0", 7, FRAME, 123.25, encoding="bgr24")
    head, payload = unpack_frame(parts)
    assert parts[0] == b"frame.cam0"
    assert head == {
        "v": 1,
        "camera": "cam0",
        "seq": 7,
        "captured_at": 123.25,
        "width": 64,
        "height": 48,
        "encoding": "bgr24",
    }
    assert np.array_equal(decode_image(head, payload), FRAME)


def test_a_jpeg_frame_round_trips_close_to_the_original():
    head, payload = unpack_frame(pack_frame("cam0", 0, FRAME, 1.0, quality=95))
    image = decode_image(head, payload)
    assert head["encoding"] == "jpeg" and image.shape == FRAME.shape
    # JPEG smooths the per-pixel noise away; the picture's colour is what survives.
    assert np.allclose(image.mean(axis=(0, 1)), FRAME.mean(axis=(0, 1)), atol=3)


@pytest.mark.parametrize(
    "body",
    [
        label_body("cam0", 3, 1.0, "red", 0.9, {"red": 0.9, "blue": 0.1}, {"name": "seed"}),
        event_body("cam0", "red", None, 0.9, 3),
        status_body("infer", "online", frames_in=4, labels={"cam0": "red"}),
    ],
)
def test_labels_events_and_status_round_trip(body):
    kind = {"label": "label", "type": "event", "component": "status"}
    kind = next(v for k, v in kind.items() if k in body)
    name = body.get("camera", body.get("component"))
    assert unpack_message(pack_message(kind, name, body)) == (kind, name, {"v": 1, **body})


BAD_FRAMES = {
    "two parts": [b"frame.cam0", header()],
    "four parts": [b"frame.cam0", header(), b"x" * 9216, b""],
    "bad msgpack": [b"frame.cam0", b"\xc1\xc1", b""],
    "body not a map": [b"frame.cam0", msgpack.packb([1, 2]), b""],
    "unknown version": [b"frame.cam0", header(v=2), b"x" * 9216],
    "missing version": [b"frame.cam0", msgpack.packb({"camera": "cam0"}), b""],
    "seq is text": [b"frame.cam0", header(seq="1"), b"x" * 9216],
    "seq is a bool": [b"frame.cam0", header(seq=True), b"x" * 9216],
    "negative seq": [b"frame.cam0", header(seq=-1), b"x" * 9216],
    "captured_at is text": [b"frame.cam0", header(captured_at="now"), b"x" * 9216],
    "camera differs from topic": [b"frame.cam1", header(), b"x" * 9216],
    "unknown encoding": [b"frame.cam0", header(encoding="png"), b"x" * 9216],
    "zero width": [b"frame.cam0", header(width=0), b""],
    "huge height": [b"frame.cam0", header(height=100_000), b""],
    "raw size mismatch": [b"frame.cam0", header(), b"x" * 9215],
    "oversized header": [b"frame.cam0", header(pad="x" * MAX_HEADER_BYTES), b"x" * 9216],
    "not a frame topic": [b"label.cam0", header(), b"x" * 9216],
    "unknown kind": [b"video.cam0", header(), b"x" * 9216],
    "non-ASCII topic": [b"frame.\xff", header(), b"x" * 9216],
    "topic without name": [b"frame.", header(), b"x" * 9216],
}


@pytest.mark.parametrize("parts", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_malformed_frames_are_refused(parts):
    with pytest.raises(ProtocolError):
        unpack_frame(parts)


BAD_MESSAGES = {
    "three parts": [b"label.cam0", msgpack.packb({"v": 1}), b""],
    "frame topic": [b"frame.cam0", msgpack.packb({"v": 1})],
    "unknown version": [b"label.cam0", msgpack.packb({"v": 99})],
    "bad msgpack": [b"event.cam0", b"\x92\x01"],
    "binary field": [b"status.infer", msgpack.packb({"v": 1, "x": b"\0" * 8})],
    "huge array": [b"status.infer", msgpack.packb({"v": 1, "x": [0] * 5000})],
}


@pytest.mark.parametrize("parts", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_malformed_messages_are_refused(parts):
    with pytest.raises(ProtocolError):
        unpack_message(parts)


def test_a_jpeg_that_does_not_decode_is_refused():
    head, payload = unpack_frame([b"frame.cam0", header(encoding="jpeg"), b"\xff\xd8junk"])
    with pytest.raises(ProtocolError, match="does not decode"):
        decode_image(head, payload)


def test_a_jpeg_whose_size_differs_from_its_header_is_refused():
    parts = pack_frame("cam0", 0, FRAME, 1.0)
    parts[1] = header(encoding="jpeg", width=640, height=480)
    head, payload = unpack_frame(parts)
    with pytest.raises(ProtocolError, match="size"):
        decode_image(head, payload)
