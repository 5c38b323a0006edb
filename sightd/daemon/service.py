"""The systemd unit for `sightd run`: rendered for this machine, or copied from docs/.

Hardened on purpose: sightd reads a camera and a model and talks on sockets, so the unit takes
away everything else (privilege gain, kernel tunables, writes anywhere but the folders it
writes). Which folders: the working folder, the event snapshots' folder, and, while the
console's Teach page is served (http.enabled and http.console, the defaults), the data set,
the runs and the model's folder, since Teach records, trains and deploys there; without it the
model's folder is read-only. docs/sightd.service is this template rendered with DOCS_VALUES.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from sightd.atomic import atomic_write_text
from sightd.config import SightdConfig
from sightd.errors import SightdError
from sightd.sources.registry import kind_of

UNIT_NAME = "sightd.service"
# PrivateTmp=yes gives the service its own empty /tmp and /var/tmp: nothing there is seen.
PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))

TEMPLATE = """\
# sightd: camera frames in, label events out. {origin}
[Unit]
Description=sightd vision daemon
After=network-online.target
Wants=network-online.target

[Service]
# READY=1 once sockets are bound and the model is loaded; WATCHDOG=1 while labels flow.
Type=notify
NotifyAccess=main
ExecStart={exec_start}
WorkingDirectory={workdir}
# Subscriber output (print) reaches the journal line by line.
Environment=PYTHONUNBUFFERED=1
WatchdogSec=30
Restart=on-failure
RestartSec=5
TimeoutStopSec=20
# SIGTERM to the supervisor only: it stops its children in order, then exits 0.
KillMode=mixed
{account}\
# /run/sightd (or $XDG_RUNTIME_DIR/sightd): for ipc:// endpoints; gone when it stops.
RuntimeDirectory=sightd
RuntimeDirectoryMode=0750
# $CACHE_DIRECTORY: an engine's export of the model, which its read-only folder cannot take.
CacheDirectory=sightd
# Hardening. Not set: PrivateDevices (hides /dev/video*) and MemoryDenyWriteExecute
# (PyTorch's CPU kernels are JIT-compiled into writable, executable memory).
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
{paths}
[Install]
WantedBy={wanted_by}
"""

SYSTEM_ACCOUNT = """\
User=sightd
Group=sightd
# The video group owns /dev/video*.
SupplementaryGroups=video
StateDirectory=sightd
"""

DOCS_VALUES = {  # docs/sightd.service: a system install under /opt/sightd, default config
    "origin": "Copy to /etc/systemd/system/ and adjust the paths\n"
    "# (or let `sightd service install` write one for this machine).",
    "exec_start": "/opt/sightd/venv/bin/sightd run -c /etc/sightd/config.yaml",
    "workdir": "/var/lib/sightd",
    "writable": {
        "/var/lib/sightd/data": "the data set (train.data_dir): Teach records into it",
        "/var/lib/sightd/runs": "the runs (train.out_dir) and the model's folder: Teach trains "
        "and deploys",
    },
}


def render_unit(
    exec_start: str,
    workdir: str,
    writable: dict[str, str] | None = None,
    read_only: dict[str, str] | None = None,
    user: bool = False,
    origin: str = "",
) -> str:
    """The unit; `writable` and `read_only` map folders (beyond the working folder, always
    writable) to why, each said in a comment above its line."""
    flag = " --user" if user else ""
    paths = [("the working folder (log files)", "ReadWritePaths", workdir)]
    paths += [(why, "ReadWritePaths", path) for path, why in (writable or {}).items()]
    paths += [(why, "ReadOnlyPaths", path) for path, why in (read_only or {}).items()]
    return TEMPLATE.format(
        origin=origin or f"Written by `sightd service install{flag}`.",
        exec_start=exec_start,
        workdir=workdir,
        account="" if user else SYSTEM_ACCOUNT,
        paths="".join(f"# {why}\n{key}=-{_escape(path)}\n" for why, key, path in paths),
        wanted_by="default.target" if user else "multi-user.target",
    )


def _escape(path: str) -> str:
    """A path as one word of a unit file (systemd unescapes C-style escapes in these lists)."""
    return path.replace("\\", "\\\\").replace(" ", "\\x20")


def unit_for(config: SightdConfig, config_path: Path | None, user: bool) -> str:
    """This install: this interpreter, this config, its folders, all absolute."""
    workdir = Path.cwd()
    command = [sys.executable, "-m", "sightd", "run"]
    if config_path is not None:
        command += ["-c", str(config_path.resolve())]
    writable, read_only = service_folders(config, workdir)
    return render_unit(shlex.join(command), str(workdir), writable, read_only, user)


def service_folders(config: SightdConfig, workdir: Path) -> tuple[dict, dict]:
    """({folder: why} the service writes beyond `workdir`, {folder: why} it only reads), with
    the config's relative paths taken from `workdir`, as `sightd run` there takes them."""

    def absolute(path: str) -> str:
        return os.path.abspath(workdir / Path(path).expanduser())

    writable: dict[str, str] = {}
    model = str(model_folder(workdir / Path(config.model.path).expanduser()))
    snapshots = config.events.snapshots
    if snapshots is not None:
        writable[absolute(snapshots.dir)] = "event snapshots (events.snapshots.dir)"
    if not (config.http.enabled and config.http.console):  # no Teach page: nothing deploys
        return writable, {model: "the model the worker hot-reloads (model.path)"}
    teach = {
        absolute(config.train.data_dir): "the data set (train.data_dir): Teach records into it",
        absolute(config.train.out_dir): "the runs (train.out_dir): Teach trains into them",
        model: "the model's folder (model.path): Teach deploys a run there",
    }
    for path, why in teach.items():
        writable.setdefault(path, why)
    return writable, {}


def model_folder(model_path: Path) -> Path:
    """The folder the worker reads its model from, as configured: links are not followed, and
    a folder that is a link itself (runs/latest, which every training run moves) stands for
    the folder it lives in, so the model of a retrain is inside it too."""
    folder = Path(os.path.abspath(model_path)).parent
    return folder.parent if folder.is_symlink() else folder


def private_tmp_warnings(config: SightdConfig, config_path: Path | None) -> list[str]:
    """One line for each thing the service needs that lies in a /tmp it will not see."""
    needed = [
        ("the config", config_path),
        (f"the Python environment (ExecStart runs {sys.executable})", Path(sys.prefix)),
        ("the working folder", Path.cwd()),
        ("the model (model.path)", Path(config.model.path)),
    ]
    for index, camera in enumerate(config.cameras):
        if kind_of(camera) in ("file", "folder"):  # a video file or an image folder
            needed.append((f"cameras[{index}].source", Path(str(camera.source)).expanduser()))
    written = [("events.snapshots.dir", config.events.snapshots and config.events.snapshots.dir)]
    if config.http.enabled and config.http.console:  # the Teach page writes these
        written += [("train.data_dir", config.train.data_dir)]
        written += [("train.out_dir", config.train.out_dir)]
    needed += [(f"the folder {key}", Path(value).expanduser()) for key, value in written if value]
    return [
        f"{what} {path} is under {tmp}, which the service does not see (its unit has "
        "PrivateTmp=yes); move it elsewhere before installing"
        for what, path in needed
        if path is not None and (tmp := _private_tmp(path))
    ]


def _private_tmp(path: Path) -> Path | None:
    for candidate in {Path(os.path.abspath(path)), path.resolve()}:
        for tmp in PRIVATE_TMP:
            if candidate.is_relative_to(tmp):
                return tmp
    return None


def unit_dir(user: bool) -> Path:
    if not user:
        return Path("/etc/systemd/system")
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "systemd" / "user"


def install_unit(text: str, directory: Path) -> Path:
    path = directory / UNIT_NAME
    atomic_write_text(path, text)
    return path


def next_steps(user: bool) -> list[str]:
    systemctl = "systemctl --user" if user else "sudo systemctl"
    steps = [f"{systemctl} daemon-reload", f"{systemctl} enable --now sightd"]
    logs = "journalctl --user -u sightd -f" if user else "journalctl -u sightd -f"
    return [*steps, logs]


def installed_unit(directory: Path) -> Path:
    """The unit `install_unit` wrote in `directory`; SightdError if there is none or another's."""
    path = directory / UNIT_NAME
    try:
        first_line = path.read_text().partition("\n")[0]
    except FileNotFoundError:
        raise SightdError(f"no {path}: nothing to uninstall") from None
    except OSError as exc:
        raise SightdError(f"cannot read {path}: {exc.strerror}") from None
    if not first_line.startswith("# sightd:"):
        raise SightdError(f"{path} was not written by sightd; remove it yourself")
    return path


def uninstall_commands(path: Path, user: bool, systemd: bool) -> list[str]:
    """The commands that undo an install, to run by hand: stop and disable the service, remove
    its unit, reload systemd. `systemd`: the unit is in systemd's folder (else only remove)."""
    sudo = "" if user or os.geteuid() == 0 else "sudo "
    systemctl = "systemctl --user" if user else f"{sudo}systemctl"
    remove = f"{sudo}rm {shlex.quote(str(path))}"
    if not systemd:
        return [remove]
    return [f"{systemctl} disable --now sightd", remove, f"{systemctl} daemon-reload"]


def uninstall(path: Path, user: bool, systemd: bool) -> list[str]:
    """Run those commands; returns them. Raises CannotUninstall, with the commands still to
    run, when one cannot be run here (no systemctl, no right to remove the unit) or fails."""
    commands = uninstall_commands(path, user, systemd)
    if not os.access(path.parent, os.W_OK):
        raise CannotUninstall(f"cannot remove {path}: permission denied", commands)
    if not systemd:
        path.unlink()
        return commands
    if not shutil.which("systemctl"):
        raise CannotUninstall("systemctl is not on PATH", commands)
    systemctl = ["systemctl", "--user"] if user else ["systemctl"]
    _run([*systemctl, "disable", "--now", "sightd"], commands)
    path.unlink()
    _run([*systemctl, "daemon-reload"], commands[2:])
    return commands


def _run(command: list[str], left: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise CannotUninstall(f"`{shlex.join(command)}` failed: {said}", left)


class CannotUninstall(SightdError):
    """An uninstall stopped before its end; `commands` are what is still to be run."""

    def __init__(self, reason: str, commands: list[str]):
        super().__init__(reason)
        self.commands = commands
