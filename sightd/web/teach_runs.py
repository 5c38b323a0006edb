"""The Teach page's runs: what `sightd train` wrote in train.out_dir, a few of their files, and
deploy, which makes one of them the model the worker serves.

Deploy goes the way model.path does. When it is out_dir/latest/model.safetensors (the default)
the latest link is swapped to the run, atomically, as `sightd train` swaps it; otherwise the
run's model.safetensors is copied over model.path, atomically. Either way the worker's hot
reload (model.reload) sees a new file, tests it and swaps it in, or refuses it and keeps
serving the old one. A model.path inside a run folder is never written: that would change
what the run says it trained.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

from sightd.atomic import atomic_symlink, atomic_write_bytes
from sightd.config import SightdConfig
from sightd.web.teach_data import TeachError

RUN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # runs/<timestamp>, or --out names
MODEL = "model.safetensors"
RUN_FILES = {  # what the page may fetch from a run folder
    "confusion_matrix.png": "image/png",
    "calibration.png": "image/png",
    "curves.png": "image/png",
    "metrics.json": "application/json",
}
MAX_RUNS = 50  # newest first
CARD_KEYS = ("arch", "classes", "image_size", "test_accuracy", "created_at", "temperature")


class Runs:
    def __init__(self, config: SightdConfig):
        self.out_dir = Path(os.path.abspath(config.train.out_dir))
        self.model_path = Path(os.path.abspath(config.model.path))
        self.reload = config.model.reload
        self.latest = self.out_dir / "latest"
        self._digests: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def folder(self, run: str) -> Path:
        """out_dir/run: a run folder directly inside out_dir (not the latest link)."""
        if not isinstance(run, str) or not RUN.fullmatch(run):
            raise TeachError(400, "a run is the name of a folder in the runs folder")
        path = self.out_dir / run
        inside = path.resolve().parent == self.out_dir.resolve()
        if path.is_symlink() or not inside or not (path / MODEL).is_file():
            raise TeachError(404, f"no run {run} with a {MODEL} in {self.out_dir}")
        return path

    def file(self, run: str, name: str) -> tuple[Path, str]:
        if name not in RUN_FILES:
            raise TeachError(404, f"a run's page shows only {', '.join(RUN_FILES)}")
        path = self.folder(run) / name
        if not path.is_file():
            raise TeachError(404, f"run {run} has no {name}")
        return path, RUN_FILES[name]

    def list(self) -> list[dict]:
        """The newest runs that hold a model, each with its card; the served one marked."""
        if not self.out_dir.is_dir():
            return []
        names = sorted(
            (
                p.name
                for p in self.out_dir.iterdir()
                if RUN.fullmatch(p.name) and not p.is_symlink() and (p / MODEL).is_file()
            ),
            reverse=True,  # timestamps: newest first
        )[:MAX_RUNS]
        served = self.served_digest()
        runs = []
        for name in names:
            path = self.out_dir / name / MODEL
            same = served is not None and self._maybe_same(path) and self.digest(path) == served
            runs.append({"run": name, "served": same, **card(path)})
        return runs

    def served(self) -> dict:
        """The file model.path names: its digest (as the worker's status names it) and card."""
        path = self.model_path
        found = {"path": str(path), "reload": self.reload, "exists": path.is_file()}
        if found["exists"]:
            found.update(card(path), digest=self.digest(path), run=self._run_of(path))
        return found

    def deploy(self, run: str) -> dict:
        source = self.folder(run) / MODEL
        if self.model_path == self.latest / MODEL:
            if self.latest.exists() and not self.latest.is_symlink():
                raise TeachError(
                    409, f"{self.latest} is not a link; move it away so deploy can point it"
                )
            atomic_symlink(self.latest, run)
            how = f"{self.latest} -> {run}"
        else:
            target = self.model_path.resolve()
            if self.out_dir.resolve() in target.parents:
                raise TeachError(
                    409,
                    f"model.path {self.model_path} lies in the runs folder: deploying would "
                    f"overwrite that run's model; set model.path to {self.latest / MODEL} "
                    "or to a file outside it",
                )
            atomic_write_bytes(self.model_path, source.read_bytes())
            how = f"copied to {self.model_path}"
        answer = {"run": run, "how": how, "digest": self.digest(source), "reload": self.reload}
        if not self.reload:
            answer["note"] = (
                "model.reload is off: the worker serves its old model until sightd run restarts"
            )
        return answer

    def digest(self, path: Path) -> str:
        """The first 12 hex digits of the file's sha256, as sightd.checkpoint names a model
        (without importing torch into the server); remembered per version of the file."""
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if key in self._digests:
                return self._digests[key]
        sha = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        with self._lock:
            if len(self._digests) > 4 * MAX_RUNS:
                self._digests.clear()
            self._digests[key] = sha.hexdigest()[:12]
        return self._digests[key]

    def served_digest(self) -> str | None:
        return self.digest(self.model_path) if self.model_path.is_file() else None

    def _maybe_same(self, path: Path) -> bool:
        """Only a file of the served one's size is hashed to compare it."""
        return path.stat().st_size == self.model_path.stat().st_size

    def _run_of(self, path: Path) -> str | None:
        """The run whose model the served file is, when it is one (through the latest link)."""
        target = path.resolve()
        if target.name == MODEL and target.parent.parent == self.out_dir.resolve():
            return target.parent.name
        return None


def card(path: Path) -> dict:
    """What a checkpoint's header says of it (arch, classes, test accuracy, temperature, when
    it was trained), read without loading the weights; {"error": ...} when it cannot be."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
        found = {key: json.loads(meta[key]) for key in CARD_KEYS if key in meta and key != "arch"}
        found["arch"] = meta.get("arch")
    except Exception as exc:  # a damaged or foreign file: said on the page, nothing more
        return {"error": f"{path.name} cannot be read as a sightd model ({exc})"}
    return found
