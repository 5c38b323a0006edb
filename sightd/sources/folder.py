"""An image folder: every image in it in name order, one per read; re-listed on each cycle.

A complete JPEG file that needs no EXIF rotation is published as the file's own bytes when the
capture would send JPEG anyway; any other image is decoded.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sightd.images import IMAGE_EXTENSIONS, image_from_bytes, is_image_file
from sightd.sources.base import (
    Frame,
    Source,
    SourceEnded,
    SourceError,
    SourceOptions,
    jpeg_frame,
    wants_jpeg,
)


class FolderOptions(SourceOptions):
    """No keys of its own: `cameras[].loop` and `cameras[].fps` say how it plays."""


class ImageFolder(Source):
    Options = FolderOptions

    def __init__(self, camera, options: FolderOptions):
        super().__init__(camera, options)
        self.path = Path(str(camera.source)).expanduser()
        self.loop = camera.loop
        self.name = f"image folder {self.path}"
        self.passthrough = wants_jpeg(camera)
        self._queue = self._list()

    @classmethod
    def problems(cls, camera, options) -> list[str]:
        path = Path(str(camera.source)).expanduser()
        if path.is_dir():
            return []
        if path.exists():
            return [f"{path} is not a folder; give a folder of images (or kind: file)"]
        return [f"no image folder at {path}; fix the path or create it"]

    def read(self, timeout: float) -> Frame | None:
        for _ in range(2):  # at most one new cycle per read
            while self._queue:
                image = self._image(self._queue.pop(0))
                if image is not None:
                    return image, time.time()
            if not self.loop:
                raise SourceEnded(f"{self.name} ended (loop: false)")
            self._queue = self._list()
        raise SourceError(f"{self.name}: none of its images can be decoded")

    def close(self) -> None:
        self._queue = []

    def _image(self, path: Path):
        """The file as a Jpeg to pass on, else decoded; None when it cannot be read."""
        try:
            data = path.read_bytes()
        except OSError:  # removed since the listing, or unreadable: skipped like a bad image
            return None
        # A file cut short (still being copied) ends without its end-of-image marker.
        if self.passthrough and data.rstrip(b"\0")[-2:] == b"\xff\xd9":
            jpeg = jpeg_frame(data)
            if jpeg is not None:
                return jpeg
        return image_from_bytes(np.frombuffer(data, np.uint8))

    def _list(self) -> list[Path]:
        try:
            files = sorted(p for p in self.path.iterdir() if is_image_file(p))
        except OSError as exc:
            raise SourceError(f"cannot list {self.name}: {exc.strerror}") from None
        if not files:
            kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise SourceError(f"{self.name} holds no images ({kinds})")
        return files
