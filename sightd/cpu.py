"""CPU thread policy: how many threads torch may use on cores that other processes share.

torch runs each op on all its OpenMP threads and waits for the slowest. When another busy
process shares a core, one of those threads is often preempted and every op waits a scheduler
slice for it, however the waiting is done: spinning (libgomp's default, ~300000 rounds before
sleeping) burns the time the preempted thread needs, sleeping (passive) pays a wake-up behind
the other process per op. Only fewer threads than busy cores avoid it, hence:

- `ThreadGovernor`: as many threads as there are cores that other processes leave free, read
  from /proc/stat (all busy time minus this process's own) since the previous reading, and
  set with torch.set_num_threads, which may change between epochs or steps.
- `configure_openmp`: a waiting thread sleeps at once (OMP_WAIT_POLICY=PASSIVE), so threads
  that have nothing to do cost no CPU, and neither does the moment before the governor sees a
  new competitor. libgomp reads its environment once, when torch first loads it, so sightd's
  package `__init__` calls this; a value already in the environment is kept.

Nothing here imports torch at import time: it must not load libgomp before the policy is set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, MutableMapping

OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}  # no spinning in a thread that waits
TAKEN = 0.5  # other processes' use of a core (fraction) from which it counts as taken
SAMPLE_S = 0.5  # shortest interval judged: 10 ms ticks tell a quarter of a core apart in it


def configure_openmp(environ: MutableMapping[str, str] = os.environ) -> None:
    """Passive OpenMP waiting, unless the environment says otherwise; before torch is imported."""
    for name, value in OPENMP_DEFAULTS.items():
        environ.setdefault(name, value)


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (taskset and cgroup cpusets narrow os.cpu_count())."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def busy_ticks(stat_text: str, cpus: list[int]) -> int:
    """Clock ticks the given CPUs spent not idle, from the text of /proc/stat.

    Busy = user + nice + system + irq + softirq + steal (time the hypervisor gave elsewhere is
    not ours either); guest time is already inside user and nice.
    """
    wanted, total = {f"cpu{n}" for n in cpus}, 0
    for line in stat_text.splitlines():
        name, *fields = line.split()
        if name in wanted:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            total += user + nice + system + irq + softirq + steal
    return total


def own_ticks(self_stat_text: str) -> int:
    """utime + stime of every thread of a process, from the text of /proc/<pid>/stat."""
    fields = self_stat_text.rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
    return int(fields[11]) + int(fields[12])


def free_cores(cores: int, others_busy: float) -> int:
    """Cores left to us when other processes keep `others_busy` cores' worth busy: 1..cores."""
    taken = int(max(others_busy, 0.0) + 1 - TAKEN)  # 0.4 of a core is not taken, 0.6 is
    return max(1, min(cores, cores - taken))


def read_proc() -> tuple[str, str] | None:
    """(/proc/stat, /proc/self/stat) texts, or None where there is no /proc (macOS, Windows)."""
    try:
        with open("/proc/stat") as stat, open("/proc/self/stat") as own:
            return stat.read(), own.read()
    except OSError:
        return None


class ThreadGovernor:
    """torch's thread count kept at the cores that other processes leave free.

    `adapt()` judges the time since its previous reading (or since construction). Build the
    governor before the work that precedes the first epoch (decoding the dataset), so that the
    first call has an interval to judge; a first call sooner than SAMPLE_S after construction
    waits for the rest of it. Without /proc, torch's threads are left as they are.
    """

    def __init__(
        self,
        max_threads: int | None = None,
        cpus: list[int] | None = None,
        read: Callable[[], tuple[str, str] | None] = read_proc,
        set_threads: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.cpus = cpus if cpus is not None else usable_cpus()
        self.max_threads = max_threads or _default_threads(len(self.cpus))
        self.read, self.clock, self.sleep = read, clock, sleep
        self.set_threads = set_threads or _set_torch_threads
        self.threads: int | None = None  # as last set; None until the first adapt()
        self.others_busy: float | None = None  # cores' worth, over the last interval
        self._last = self._sample()

    def adapt(self) -> int:
        """Set torch's thread count for the work that follows, and return it.

        Once per epoch is enough; calling it every step is cheap: /proc is read again only
        once SAMPLE_S has passed, so a competitor that arrives mid-epoch costs at most that.
        """
        if self._last is None:
            return self.threads or self.max_threads
        waited = self.clock() - self._last[0]
        if waited < SAMPLE_S:
            if self.threads is not None:
                return self.threads
            self.sleep(SAMPLE_S - waited)
        now = self._sample()
        if now is None:
            return self.threads or self.max_threads
        ticks = (now[1] - self._last[1]) - (now[2] - self._last[2])  # all busy time but ours
        self.others_busy = ticks / _ticks_per_second() / max(now[0] - self._last[0], 1e-9)
        self._last = now
        threads = min(self.max_threads, free_cores(len(self.cpus), self.others_busy))
        if threads != self.threads:
            self.set_threads(threads)
            self.threads = threads
        return threads

    def _sample(self) -> tuple[float, int, int] | None:
        texts = self.read()
        if texts is None:
            return None
        return self.clock(), busy_ticks(texts[0], self.cpus), own_ticks(texts[1])


def _default_threads(cores: int) -> int:
    """All usable cores, or fewer where OMP_NUM_THREADS says so (a user's cap is kept)."""
    try:
        return max(1, min(cores, int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])))
    except ValueError:
        return cores


def _ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
