"""An image folder: every image in it in name order, one per read; re-listed on each cycle."""

from __future__ import annotations

import time
from pathlib import Path

from sightd.images import IMAGE_EXTENSIONS, is_image_file, read_image
from sightd.sources.base import Frame, Source, SourceEnded, SourceError, SourceOptions


class FolderOptions(SourceOptions):
    """No keys of its own: `cameras[].loop` and `cameras[].fps` say how it plays."""


class ImageFolder(Source):
    Options = FolderOptions

    def __init__(self, camera, options: FolderOptions):
        super().__init__(camera, options)
        self.path = Path(str(camera.source)).expanduser()
        self.loop = camera.loop
        self.name = f"image folder {self.path}"
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
                image = read_image(self._queue.pop(0))
                if image is not None:
                    return image, time.time()
            if not self.loop:
                raise SourceEnded(f"{self.name} ended (loop: false)")
            self._queue = self._list()
        raise SourceError(f"{self.name}: none of its images can be decoded")

    def close(self) -> None:
        self._queue = []

    def _list(self) -> list[Path]:
        try:
            files = sorted(p for p in self.path.iterdir() if is_image_file(p))
        except OSError as exc:
            raise SourceError(f"cannot list {self.name}: {exc.strerror}") from None
        if not files:
            kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise SourceError(f"{self.name} holds no images ({kinds})")
        return files
