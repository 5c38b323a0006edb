"""Property-based tests: every decoder either accepts a message or raises its own error type.

Nothing a peer sends may crash a sightd process with an unexpected exception.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sightd import protocol
from sightd.checkpoint import load_checkpoint
from sightd.errors import SightdError
from sightd.protocol import ProtocolError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What msgpack can carry: 64-bit integers; NaN is excluded so round trips compare equal.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, "1", None]),
        "camera": st.sampled_from(["cam0", "x", 7, ""]),
        "seq": st.integers(-5, 2**64 - 1) | scalars,
        "captured_at": st.floats() | scalars,
        "width": st.integers(-5, 100_000) | scalars,
        "height": st.integers(-5, 100_000) | scalars,
        "encoding": st.sampled_from(["jpeg", "bgr24", "png", 3]),
        "extra": values,
    },
)


def packed(value) -> bytes:
    return msgpack.packb(value)


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_random_parts_never_escape_the_frame_decoder(parts):
    try:
        header, payload = protocol.unpack_frame(parts)
        protocol.decode_image(header, payload)
    except ProtocolError:
        pass


@FUZZ
@given(headers, st.binary(max_size=256))
def test_wrong_typed_headers_are_rejected_or_decode_to_their_declared_size(header, payload):
    parts = [b"frame.cam0", packed(header), payload]
    try:
        header_out, payload_out = protocol.unpack_frame(parts)
        image = protocol.decode_image(header_out, payload_out)
    except ProtocolError:
        return
    assert image.shape == (header_out["height"], header_out["width"], 3)


@FUZZ
@given(st.binary(max_size=64), values)
def test_any_two_part_message_is_decoded_or_rejected(raw_topic, body):
    try:
        kind, name, decoded = protocol.unpack_message([raw_topic, packed(body)])
    except ProtocolError:
        return
    assert kind in protocol.KINDS and decoded["v"] == protocol.VERSION


@FUZZ
@given(
    st.sampled_from(["label", "event", "status"]),
    st.from_regex(r"[a-z0-9_:-]{1,20}", fullmatch=True),
    st.dictionaries(st.text(max_size=8), scalars, max_size=5),
)
def test_pack_then_unpack_returns_the_message(kind, name, body):
    body.pop("v", None)
    assert protocol.unpack_message(protocol.pack_message(kind, name, body)) == (
        kind,
        name,
        {"v": protocol.VERSION, **body},
    )


@FUZZ
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from(["jpeg", "bgr24"]))
def test_frames_round_trip_at_any_size(width, height, encoding):
    frame = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), np.uint8)
    header, payload = protocol.unpack_frame(protocol.pack_frame("cam0", 1, frame, 1.5, encoding))
    image = protocol.decode_image(header, payload)
    assert image.shape == frame.shape
    if encoding == "bgr24":
        assert np.array_equal(image, frame)


def test_a_declared_huge_frame_is_rejected_before_any_allocation():
    header = {
        "v": 1,
        "camera": "cam0",
        "seq": 0,
        "captured_at": 0.0,
        "width": 10**6,
        "height": 10**6,
        "encoding": "bgr24",
    }
    with pytest.raises(ProtocolError, match="out of bounds"):
        protocol.unpack_frame([b"frame.cam0", packed(header), b"x"])


def test_msgpack_bombs_are_refused():
    bomb = b"\xdd\xff\xff\xff\xff"  # an array header that declares 4 billion items
    with pytest.raises(ProtocolError):
        protocol.unpack_message([b"label.cam0", bomb])


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_model_loader_rejects_arbitrary_bytes_with_a_sightd_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("m") / "model.safetensors"
    path.write_bytes(data)
    with pytest.raises(SightdError):
        load_checkpoint(path)
