"""Where a checkpoint's export for an engine lives, and making it when it is missing or stale.

The export goes beside the checkpoint (model.safetensors -> model.onnx, model.openvino.xml),
where `sightd export` puts it by default. Where the model folder is read-only (a systemd
service's ReadOnlyPaths, a shared mount) it goes to a cache folder instead, one subfolder per
checkpoint digest: $SIGHTD_CACHE_DIR, else systemd's $CACHE_DIRECTORY, else
$XDG_CACHE_HOME/sightd, else ~/.cache/sightd; the log says which.

It is made by `python -m sightd export` in a subprocess, so torch is imported there, never in
the worker; the export stages its files and renames them into place, so a reader never sees a
half-written one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sightd.errors import SightdError
from sightd.export import default_path

log = logging.getLogger("sightd.engines")

EXPORT_TIMEOUT_S = 600.0  # importing torch, exporting and checking: seconds; a hang is not


def cache_dir() -> Path:
    for variable in ("SIGHTD_CACHE_DIR", "CACHE_DIRECTORY"):
        if os.environ.get(variable):
            return Path(os.environ[variable].split(":")[0])  # systemd may list several
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sightd"


def cached_path(checkpoint: Path, fmt: str, digest: str) -> Path:
    return default_path(cache_dir() / "engines" / digest / checkpoint.name, fmt)


def engine_file(checkpoint: Path, fmt: str, digest: str) -> Iterator[Path]:
    """The exports there are for this checkpoint, beside it first: each may still be stale."""
    for path in (default_path(checkpoint, fmt), cached_path(checkpoint, fmt, digest)):
        if path.is_file():
            yield path


def make_engine_file(
    checkpoint: Path,
    fmt: str,
    digest: str,
    progress: Callable[[], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Path:
    """Export `checkpoint` as `fmt` beside it, or in the cache where its folder is read-only."""
    out = default_path(checkpoint, fmt)
    if not os.access(out.parent, os.W_OK):
        folder, out = out.parent, cached_path(checkpoint, fmt, digest)
        log.info("model folder %s is read-only: the %s export goes to %s", folder, fmt, out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SightdError(
                f"cannot write the {fmt} export of {checkpoint}: its folder is read-only and "
                f"the cache folder {out.parent} cannot be made ({exc.strerror}); run "
                f"`sightd export {checkpoint} --format {fmt}` where it can be written, or set "
                "SIGHTD_CACHE_DIR"
            ) from None
    log.info("making the %s export of %s (checkpoint %s) at %s", fmt, checkpoint, digest, out)
    started = time.monotonic()
    run_export(checkpoint, fmt, out, progress, cancelled)
    log.info("%s export made in %.1f s", fmt, time.monotonic() - started)
    return out


def run_export(
    checkpoint: Path,
    fmt: str,
    out: Path,
    progress: Callable[[], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """`python -m sightd export CHECKPOINT --format FMT --out OUT`; its error as a SightdError."""
    command = [sys.executable, "-m", "sightd", "export", str(checkpoint), "--format", fmt]
    proc = subprocess.Popen(
        [*command, "--out", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    try:
        while True:
            try:
                _, errors = proc.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if (cancelled is not None and cancelled()) or time.monotonic() > deadline:
                    why = "stopped" if time.monotonic() <= deadline else "too slow"
                    raise SightdError(f"making the {fmt} export of {checkpoint}: {why}") from None
                if progress is not None:
                    progress()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        lines = [line for line in errors.splitlines() if line.strip()]
        reason = lines[-1].removeprefix("Error: ") if lines else f"exit code {proc.returncode}"
        raise SightdError(f"cannot make the {fmt} export of {checkpoint}: {reason}")
