"""What the fault tests share: hostile frame messages, /proc figures, stamped readers, and an
HTTP receiver that can go down and come back.

The hostile messages are what a broken or malicious camera endpoint could send the worker:
random bytes, wrong part counts, msgpack with the wrong types, sizes and lengths far beyond
anything real, and JPEGs whose own header claims a huge picture.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import msgpack
import numpy as np
import zmq
from conftest import free_port

from sightd.protocol import pack_frame

JPEG_BOMB_SIDE = 30000  # before sightd checked the JPEG's own size: 5 GB and 9 s per decode


def proc_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a live process in kB: VmRSS (now) or VmHWM (peak since start)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def stamped(messages: Iterator[dict]) -> Iterator[dict]:
    """Each message with `received_at` (UNIX time), for ages measured by the reader."""
    for message in messages:
        message["received_at"] = time.time()
        yield message


def jpeg_bomb(side: int = JPEG_BOMB_SIDE) -> bytes:
    """A few hundred bytes of JPEG whose frame header claims side x side pixels."""
    data = bytearray(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, side, side)
    return bytes(data)


def _templates(camera: str, rng: np.random.Generator) -> list[list[bytes]]:
    """Fixed malformed messages; each breaks the frame protocol in one way."""
    good = pack_frame(camera, 1, np.zeros((48, 64, 3), np.uint8), time.time())
    head = msgpack.unpackb(good[1])
    blob = rng.bytes(2048)  # so that a worker keeping what it refused would visibly grow

    def header(**changes) -> bytes:
        return msgpack.packb({**head, **changes})

    return [
        [good[0]],  # one part
        [good[0], good[1]],  # two parts
        [*good, blob],  # four parts
        [*good, *([b"x"] * 13)],  # sixteen parts
        [good[0], msgpack.packb([1, 2, 3]), blob],  # a list, not a map
        [good[0], header(seq="7"), blob],
        [good[0], header(width=64.0), blob],
        [good[0], header(camera=7), blob],
        [good[0], header(captured_at=None), blob],
        [good[0], header(v="1"), blob],
        [good[0], header(encoding=["jpeg"]), blob],
        [good[0], header(width=10**9, height=10**9), blob],
        [good[0], header(width=8192, height=8192, encoding="bgr24"), blob],
        [good[0], b"\xdd\xff\xff\xff\xff" + blob[:16], blob],  # array of 2**32 - 1 items
        [good[0], b"\xdf\xff\xff\xff\xff" + blob[:16], blob],  # map of 2**32 - 1 pairs
        [good[0], b"\xdb\xff\xff\xff\xff" + blob[:16], blob],  # str of 4 GiB
        [good[0], b"\xc6\x7f\xff\xff\xff" + blob[:16], blob],  # bin of 2 GiB
        [good[0], header(pad="x" * 70_000), blob],  # header over its 64 KiB limit
        [b"frame.\xff\xfe", good[1], blob],  # topic not ASCII
        [b"frame.not a name!", good[1], blob],
    ]


def hostile_flood(count: int, camera: str, seed: int = 0) -> Iterator[tuple[list[bytes], bool]]:
    """`count` hostile messages for `camera`'s topic, as (parts, passes the header checks).

    One in 50 passes the header checks and carries a JPEG bomb (refused when decoded, if it is
    the camera's newest frame that cycle); every other one breaks the protocol.
    """
    rng = np.random.default_rng(seed)
    templates = _templates(camera, rng)
    bomb_header = pack_frame(camera, 2, np.zeros((480, 640, 3), np.uint8), time.time())
    bomb = [bomb_header[0], bomb_header[1], jpeg_bomb()]
    for index in range(count):
        if index % 50 == 49:
            bomb[1] = msgpack.packb({**msgpack.unpackb(bomb[1]), "captured_at": time.time()})
            yield bomb, True
        elif index % 3 == 0:  # random bytes after a frame topic, in one to three parts
            parts = [b"frame." + rng.bytes(6)]
            parts += [rng.bytes(int(rng.integers(1, 3000))) for _ in range(index // 3 % 3)]
            yield parts, False
        else:
            yield templates[index % len(templates)], False


def flood(sock: zmq.Socket, counted: Callable[[], int], count: int, ahead: int = 2000):
    """Send `count` hostile messages for cam1, never more than `ahead` beyond what the worker
    says it has counted (`counted()`), so that none waits long in any queue.
    Returns (messages that break the protocol, messages that pass the header checks)."""
    malformed = valid = 0
    for parts, passes_header in hostile_flood(count, "cam1"):
        sock.send_multipart(parts)
        valid += passes_header
        malformed += not passes_header
        if (malformed + valid) % 1000 == 0:
            while malformed - counted() > ahead:
                time.sleep(0.02)
    return malformed, valid


def wait_for_subscription(sock: zmq.Socket, prefix: bytes, timeout: float = 30.0) -> None:
    """Until the worker has subscribed: what is sent before that is lost (slow joiner)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.poll(100) and sock.recv() == b"\x01" + prefix:
            return
    raise AssertionError(f"no subscription to {prefix!r} within {timeout} s")


class Receiver:
    """An HTTP server on a fixed port that can be stopped and started again; keeps POSTs."""

    def __init__(self) -> None:
        self.port, self.posts, self.httpd = free_port(), [], None
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
