"""A third-party camera source: a checkerboard whose squares shift by one each frame.

It is what a user's package would hold to add a kind of source: a Source subclass with its
own options class, registered in the `sightd.sources` entry-point group (pyproject.toml).
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import Field

from sightd.sources.base import Frame, Source, SourceOptions


class CheckerboardOptions(SourceOptions):
    square: int = Field(16, ge=1, le=256, description="side of a square in pixels")
    width: int = Field(160, ge=8, le=4096)
    height: int = Field(120, ge=8, le=4096)
    color: list[int] = Field([255, 255, 255], min_length=3, max_length=3, description="BGR")


class Checkerboard(Source):
    Options = CheckerboardOptions
    options: CheckerboardOptions

    def __init__(self, camera, options: CheckerboardOptions):
        super().__init__(camera, options)
        self.name = f"checkerboard {options.square} px"
        self.count = 0

    @classmethod
    def describe(cls, camera, options) -> str:
        return f"checkerboard {options.square} px"

    def read(self, timeout: float) -> Frame | None:
        o = self.options
        ys, xs = np.mgrid[0 : o.height, 0 : o.width]
        light = ((xs + self.count) // o.square + ys // o.square) % 2 == 0
        frame = np.zeros((o.height, o.width, 3), np.uint8)
        frame[light] = o.color
        self.count += 1
        return frame, time.time()
