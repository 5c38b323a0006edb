"""The Teach page's data set: the class folders of train.data_dir with their counts, their
images a page at a time, thumbnails, a new class, a bad sample deleted.

Every name in a request is checked before it reaches the disk: a class is a folder name as
`sightd collect` makes them (collect.LABEL: no separator, no leading dot, so no `..`), a file a
plain image file name; the path built from them is then resolved, links followed, and must lie
directly inside data_dir (or its class folder). Counts and sizes are bounded.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from sightd.images import IMAGE_EXTENSIONS, is_image_file
from sightd.trainer.collect import LABEL

MAX_CLASSES = 100  # class folders a data set may have (the page adds no more)
MAX_FILES = 10_000  # images a class may have (recording stops short of it)
MAX_PAGE = 200  # file names in one answer
THUMB_SIDE = 96  # pixels: the longer side of a thumbnail
MAX_IMAGE_BYTES = 32 * 2**20  # larger files get no thumbnail: nobody records those
THUMB_CACHE = 1024  # thumbnails kept in memory, a few KB each


class TeachError(Exception):
    """A request the Teach page cannot do: an HTTP status and a sentence for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def check_class(name: str) -> str:
    if not isinstance(name, str) or not LABEL.fullmatch(name):
        raise TeachError(
            400,
            "a class name is letters, digits, _, - and . (up to 64, not starting with . or -); "
            "it becomes a folder name",
        )
    return name


def check_file(name: str) -> str:
    bad = (
        not name
        or len(name.encode()) > 255
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        or Path(name).suffix.lower() not in IMAGE_EXTENSIONS
    )
    if bad:
        raise TeachError(400, f"{name!r} is not an image file name of a class folder")
    return name


class DataSet:
    """train.data_dir as the page sees it."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def classes(self) -> list[dict]:
        """Every class folder training would use (visible sub-folders), with its image count
        as training counts them (sub-folders included); `managed` is false for a folder whose
        name the page cannot address (made by hand, e.g. with a space)."""
        if not self.root.is_dir():
            return []
        names = sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        return [
            {"name": n, "count": _count(self.root / n), "managed": bool(LABEL.fullmatch(n))}
            for n in names[:MAX_CLASSES]
        ]

    def folder(self, name: str) -> Path:
        """data_dir/name, checked to be a folder directly inside data_dir (it may not exist)."""
        path = self.root / check_class(name)
        if path.resolve().parent != self.root:
            raise TeachError(400, f"class folder {name} leads outside the data set")
        return path

    def existing(self, name: str) -> Path:
        path = self.folder(name)
        if not path.is_dir():
            raise TeachError(404, f"no class {name} in {self.root}")
        return path

    def file(self, name: str, file: str) -> Path:
        folder = self.existing(name)
        path = folder / check_file(file)
        if path.resolve().parent != folder.resolve() or not path.resolve().is_file():
            raise TeachError(404, f"no image {file} in class {name}")
        return path

    def samples(self, name: str, offset: int = 0, limit: int = 100) -> dict:
        """The image file names directly in the class folder, sorted, one page of them."""
        if not (offset >= 0 and 1 <= limit <= MAX_PAGE):
            raise TeachError(400, f"offset must be 0 or more and limit 1 to {MAX_PAGE}")
        folder = self.existing(name)
        files = sorted(e.name for e in os.scandir(folder) if is_image_file(Path(e.path)))
        return {
            "class": name,
            "total": len(files),
            "offset": offset,
            "files": files[offset : offset + limit],
        }

    def add(self, name: str) -> dict:
        path = self.folder(name)
        if path.exists():
            raise TeachError(409, f"class {name} exists already")
        self.make(name)
        return {"name": name, "count": 0, "managed": True}

    def make(self, name: str) -> Path:
        """The class folder, created when missing, within MAX_CLASSES."""
        path = self.folder(name)
        if not path.is_dir():
            if len(self.classes()) >= MAX_CLASSES:
                raise TeachError(409, f"the data set has {MAX_CLASSES} classes, the most it may")
            path.mkdir(parents=True, exist_ok=True)
        return path

    def delete(self, name: str, file: str) -> dict:
        path = self.file(name, file)
        path.unlink(missing_ok=True)  # its thumbnail ages out of the cache
        return {"class": name, "deleted": file, "count": _count(path.parent)}

    def remove_class(self, name: str) -> dict:
        """Only an empty class folder goes: images are deleted one by one, on purpose."""
        path = self.existing(name)
        try:
            path.rmdir()
        except OSError:
            raise TeachError(409, f"class {name} is not empty; delete its images first") from None
        return {"removed": name}

    def thumbnail(self, name: str, file: str) -> tuple[bytes, str]:
        """(a JPEG at most THUMB_SIDE on its longer side, its ETag), decoded once per version
        of the file and then kept."""
        path = self.file(name, file)
        st = path.stat()
        if st.st_size > MAX_IMAGE_BYTES:
            raise TeachError(413, f"{file} is over {MAX_IMAGE_BYTES // 2**20} MB")
        key = (str(path), st.st_mtime_ns, st.st_size)
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key], etag
        data = _thumbnail(path)
        with self._lock:
            self._thumbs[key] = data
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return data, etag


def _count(folder: Path) -> int:
    """Images training would take from the folder: visible files, sub-folders included."""
    return sum(
        1
        for p in folder.rglob("*")
        if is_image_file(p) and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )


def _thumbnail(path: Path) -> bytes:
    import cv2

    from sightd.images import read_image

    try:
        frame = read_image(path, THUMB_SIDE)  # a JPEG decodes reduced, near the size wanted
    except OSError as exc:
        raise TeachError(404, f"{path.name} cannot be read ({exc.strerror or exc})") from None
    if frame is None:
        raise TeachError(415, f"{path.name} cannot be decoded as an image")
    height, width = frame.shape[:2]
    scale = min(1.0, THUMB_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise TeachError(500, f"{path.name}: its thumbnail could not be encoded")
    return jpeg.tobytes()


def number(body: dict, key: str, kind: type, low: float, high: float, default=None):
    """body[key] as an int or float within [low, high] (default when absent), else a 400."""
    value = body.get(key, default)
    if value is None:
        return None
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    wrong_type = isinstance(value, bool) or not isinstance(value, (int, float))
    if wrong_type or (kind is int and not integral) or not low <= value <= high:
        what = "a whole number" if kind is int else "a number"
        raise TeachError(400, f"{key} must be {what} from {low:g} to {high:g}")
    return kind(value)
