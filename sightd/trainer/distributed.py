"""Training on several processes: the launcher of `sightd train --nproc N`, the process group,
and the few collectives the trainer needs (DistributedDataParallel; gloo on CPU, NCCL on CUDA).

Under torchrun each process is already one rank and joins torchrun's group. With --nproc the
command spawns the ranks itself and hosts their rendezvous store on a socket it binds to
127.0.0.1 (torch's TCPStore, left to itself, listens on every interface), and gloo and NCCL are
pointed at the loopback interface: nothing listens beyond this machine.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import wait

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from sightd.config import TrainConfig
from sightd.cpu import usable_cpus
from sightd.devices import resolve_device
from sightd.errors import SightdError
from sightd.process import set_process_title

LOOPBACK = "127.0.0.1"
LOOPBACK_ENV = {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}  # --nproc only
JOIN_TIMEOUT = timedelta(minutes=5)  # ranks importing torch on busy cores still meet in time
STOP_GRACE_S = 10.0  # a rank asked to stop (SIGTERM) gets this long before SIGKILL
MESSAGE_LIMIT = 8000  # characters of a rank's error sent back: it never fills the pipe
TORCHRUN_ENV = ("LOCAL_RANK", "WORLD_SIZE", "RANK")  # what torchrun sets for every rank


@dataclass(frozen=True)
class Job:
    """What every rank runs: run_training's arguments."""

    cfg: TrainConfig
    data_dir: str
    run_dir: str | None
    progress_file: str | None
    link_latest: bool


def train(job: Job, nproc: int = 1) -> None:
    """`sightd train`: one process, `nproc` spawned ranks, or this rank of a torchrun group."""
    from sightd.trainer.train import run_training

    if under_torchrun():
        if nproc > 1:
            raise SightdError("--nproc and torchrun both start processes; leave --nproc out")
        with process_group(_backend(job.cfg.device), int(os.environ["LOCAL_RANK"])):
            run_training(*_arguments(job))
    elif nproc > 1:
        launch(job, nproc)
    else:
        run_training(*_arguments(job))


def under_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_ENV)


# --- what the trainer asks of the group (one process: rank 0 of 1, every call a no-op) ---


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 speaks and writes the run folder; the others only train."""
    return rank() == 0


def say(text: str) -> None:
    if is_main():
        tqdm.write(text)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model that takes the training steps: DDP over `model` where there are several ranks.

    On CUDA batch norm is synchronised, so each step normalises over the whole global batch as
    one process would. torch's SyncBatchNorm runs on GPUs only: on a CPU each rank normalises its
    share of the batch (DDP's default), and the statistics that validation and serving use are
    recomputed over the same images on every rank and averaged (average_batch_norm).
    """
    if world() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place, same object
        index = torch.cuda.current_device() if device.index is None else device.index
        return DistributedDataParallel(model, device_ids=[index])
    return DistributedDataParallel(model)


def shared_generator(seed: int) -> torch.Generator | None:
    """A generator drawing the same permutations on every rank (None in one process: the global
    generator shuffles there, as it always has)."""
    return torch.Generator().manual_seed(seed) if world() > 1 else None


def seed_this_rank(seed: int) -> None:
    """Each rank its own augmentation draws from here on (one process: unchanged)."""
    if world() > 1:
        torch.manual_seed(int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0]))


def epoch_batches(
    n: int, batch_size: int, shuffle: torch.Generator | None, device
) -> list[tuple[torch.Tensor, float]]:
    """(this rank's rows, its loss weight) for each global batch of a shuffled epoch of n rows.

    A global batch trains when every rank's share has two images (batch norm needs two; in one
    process a last batch of one is skipped). DDP averages the ranks' gradients, so a share's
    loss is weighted by len(share) * ranks / len(batch): together, the global batch's mean.
    """
    if shuffle is None:
        order = torch.randperm(n, device=device)
    else:
        order = torch.randperm(n, generator=shuffle).to(device)
    steps = []
    for whole in order.split(batch_size):
        if len(whole) >= smallest_batch():
            share = my_share(whole)
            steps.append((share, len(share) * world() / len(whole)))
    return steps


def my_share(index: torch.Tensor) -> torch.Tensor:
    """This rank's part of a global batch: consecutive slices, sizes differing by one at most."""
    return index.tensor_split(world())[rank()] if world() > 1 else index


def smallest_batch() -> int:
    """A global batch trains when each rank's share has two images (batch norm needs two)."""
    return 2 * world()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over the ranks; every rank gets the same sums."""
    if world() == 1:
        return values
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


@torch.no_grad()
def average_batch_norm(model: torch.nn.Module) -> None:
    """Batch norm's running statistics averaged over the ranks: the same on each."""
    if world() == 1:
        return
    for norm in model.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm) and norm.track_running_stats:
            for buffer in (norm.running_mean, norm.running_var):
                dist.all_reduce(buffer)
                buffer.div_(world())


# --- the group: joined under torchrun or by a spawned rank ---


@contextmanager
def process_group(backend: str, local_rank: int, store: dist.Store | None = None, **ranks):
    """This process as one rank, its GPU chosen where it trains on CUDA; left on the way out."""
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if store is None:
        dist.init_process_group(backend, init_method="env://", timeout=JOIN_TIMEOUT)
    else:
        dist.init_process_group(backend, store=store, timeout=JOIN_TIMEOUT, **ranks)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _backend(device_name: str) -> str:
    device = resolve_device(device_name)
    if device.type == "mps":
        raise SightdError(
            "training on several processes needs cpu or cuda; mps trains in one process: "
            "use --device cpu or leave out --nproc"
        )
    return "nccl" if device.type == "cuda" else "gloo"


def _arguments(job: Job) -> tuple:
    return job.cfg, job.data_dir, job.run_dir, job.progress_file, job.link_latest


# --- the launcher of --nproc N ---


def launch(job: Job, nproc: int) -> None:
    """Run `job` on `nproc` spawned ranks; the first failure stops the others and is raised as
    one SightdError naming the rank and why."""
    backend = _preflight(job, nproc)
    ctx = torch.multiprocessing.get_context("spawn")  # a fork would copy torch's threads
    pipes = [ctx.Pipe(duplex=False) for _ in range(nproc)]  # each rank's report, if it fails
    with _loopback_store() as port, _children_env(nproc):
        ranks = [
            ctx.Process(target=_rank_main, args=(r, nproc, port, backend, pipes[r][1], job))
            for r in range(nproc)
        ]
        for process in ranks:
            process.start()
        try:
            failed = _wait_all(ranks)
        finally:
            _stop(ranks)
    if failed is not None:
        reports = {r: reader.recv() for r, (reader, _) in enumerate(pipes) if reader.poll()}
        raise SightdError(_failure(*failed, reports))


def _preflight(job: Job, nproc: int) -> str:
    """What would fail on every rank fails here once, before any process starts."""
    from sightd.model import model_names
    from sightd.trainer.data import scan_folder

    if job.cfg.arch not in model_names():
        raise SightdError(
            f"unknown model arch {job.cfg.arch!r}; choose one of {', '.join(model_names())}"
        )
    backend = _backend(job.cfg.device)
    if backend == "nccl" and nproc > torch.cuda.device_count():
        raise SightdError(
            f"--nproc {nproc} asks for one GPU each and {torch.cuda.device_count()} are "
            f"visible: use --nproc {torch.cuda.device_count()} or --device cpu"
        )
    if job.cfg.batch_size < 2 * nproc:
        raise SightdError(
            f"batch size {job.cfg.batch_size} is too small for {nproc} processes: each needs two "
            f"images a step (batch norm); use --batch-size {2 * nproc} or more, or fewer processes"
        )
    scan_folder(job.data_dir)  # a missing or empty folder: one message, not one per rank
    return backend


@contextmanager
def _loopback_store():
    """The rendezvous store, served by this process on a free port of 127.0.0.1 only."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((LOOPBACK, 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        store = dist.TCPStore(
            LOOPBACK,
            port,
            None,
            True,
            timeout=JOIN_TIMEOUT,
            wait_for_workers=False,
            master_listen_fd=listener.fileno(),
        )
    except BaseException:
        listener.close()
        raise
    listener.detach()  # the store owns the socket now, and closes it
    try:
        yield port
    finally:
        del store


@contextmanager
def _children_env(nproc: int):
    """Loopback for gloo and NCCL, and about C/N threads per rank on C cores (a value the user
    set is kept); restored afterwards, since the ranks inherit this process's environment."""
    wanted = {**LOOPBACK_ENV, "OMP_NUM_THREADS": str(max(1, len(usable_cpus()) // nproc))}
    saved = {name: os.environ.get(name) for name in wanted}
    for name, value in wanted.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


def _rank_main(rank_: int, nproc: int, port: int, backend: str, report, job: Job) -> None:
    """A spawned rank: join the group, train, and report a failure as a message, not a trace."""
    from sightd.trainer.train import run_training

    set_process_title(f"sightd.train:rank{rank_}")
    _die_with_parent()
    # tqdm's default lock is a named semaphore, which a rank killed by a signal leaves behind
    # (multiprocessing then warns about it at exit); these bars are this process's alone
    tqdm.set_lock(threading.RLock())
    try:
        store = dist.TCPStore(LOOPBACK, port, None, False, timeout=JOIN_TIMEOUT)
        with process_group(backend, rank_, store, rank=rank_, world_size=nproc):
            run_training(*_arguments(job))
    except KeyboardInterrupt:  # Ctrl-C reached every rank; the launcher says so once
        sys.exit(130)
    except SightdError as exc:
        report.send(("error", str(exc)[:MESSAGE_LIMIT]))
        sys.exit(1)
    except Exception as exc:  # a crash: its trace goes back, for the launcher to show
        report.send((f"{type(exc).__name__}: {exc}"[:500], traceback.format_exc()[-MESSAGE_LIMIT:]))
        sys.exit(1)


def _die_with_parent() -> None:
    """SIGTERM when the launcher dies, even by SIGKILL (Linux; elsewhere nothing is done)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() == 1:  # the launcher was already gone before the call
            sys.exit(1)


def _wait_all(ranks) -> tuple[int, list[int | None]] | None:
    """Wait for every rank; None if all succeeded, else (the first that failed, each rank's
    exit code at that moment: None for those still running, which are then stopped)."""
    pending = {process.sentinel: i for i, process in enumerate(ranks)}
    while pending:
        for sentinel in wait(list(pending)):
            i = pending.pop(sentinel)
            ranks[i].join()
            if ranks[i].exitcode != 0:
                return i, [process.exitcode for process in ranks]
    return None


def _stop(ranks) -> None:
    for process in ranks:
        if process.is_alive():
            process.terminate()
    for process in ranks:
        process.join(STOP_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join()


def _failure(first: int, codes: list[int | None], reports: dict[int, tuple[str, str]]) -> str:
    """One line for the cause: a rank's own message, else a rank killed by a signal, else a
    crash (its trace printed first), else the first exit status."""
    nproc, stopped = len(codes), "; the other processes were stopped"
    messages = sorted({text for kind, text in reports.values() if kind == "error"})
    if messages:
        return " / ".join(messages)
    killed = [i for i, code in enumerate(codes) if code is not None and code < 0]
    if killed:  # before the launcher stopped anyone: from outside (SIGKILL: the OOM killer too)
        name = signal.Signals(-codes[killed[0]]).name
        return f"training process {killed[0]} of {nproc} was killed by {name}{stopped}"
    if reports:
        r, (summary, trace) = min(reports.items())
        print(trace, file=sys.stderr, end="")
        return f"training process {r} of {nproc} failed ({summary}){stopped}"
    return f"training process {first} of {nproc} exited with status {codes[first]}{stopped}"
