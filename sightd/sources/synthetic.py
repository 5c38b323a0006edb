"""A moving test pattern: colour bars, a sweeping box and a frame counter; needs no camera."""

from __future__ import annotations

import time

import cv2
import numpy as np
from pydantic import Field

from sightd.sources.base import Frame, Source, SourceOptions


class SyntheticOptions(SourceOptions):
    width: int = Field(640, ge=64, le=8192, description="frame width in pixels")
    height: int = Field(480, ge=64, le=8192, description="frame height in pixels")


class Synthetic(Source):
    Options = SyntheticOptions
    name = "synthetic"

    def __init__(self, camera=None, options: SyntheticOptions | None = None):
        options = options or SyntheticOptions()
        super().__init__(camera, options)
        self.width, self.height = options.width, options.height
        bars = np.array(
            [[192, 192, 192], [0, 192, 192], [192, 192, 0], [0, 192, 0], [192, 0, 192]],
            np.uint8,
        )
        columns = bars[np.arange(self.width) * len(bars) // self.width]
        shape = (self.height, self.width, 3)
        self._background = np.ascontiguousarray(np.broadcast_to(columns, shape))
        self._count = 0

    @classmethod
    def describe(cls, camera, options) -> str:
        return "synthetic"

    def read(self, timeout: float) -> Frame | None:
        frame = self._background.copy()
        side = self.height // 4
        x = (self._count * 8) % (self.width - side)
        y = self.height // 2 - side // 2
        cv2.rectangle(frame, (x, y), (x + side, y + side), (255, 255, 255), -1)
        cv2.putText(frame, str(self._count), (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
        self._count += 1
        return frame, time.time()
