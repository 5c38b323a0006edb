"""The CPU thread policy: OpenMP waits passively, and torch gets the cores others leave free."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sightd import cpu

HZ = os.sysconf("SC_CLK_TCK")
PROC_STAT = """cpu  700 10 90 5000 20 0 5 3 40 0
cpu0 400 10 50 2000 10 0 3 2 40 0
cpu1 300 0 40 3000 10 0 2 1 0 0
intr 12345 1 2 3
ctxt 999
"""


def fake_stat(cpu0_busy: int, cpu1_busy: int) -> str:
    """/proc/stat whose two CPUs have spent these ticks in user time (the rest idle)."""
    lines = [f"cpu{n} {busy} 0 0 1000 0 0 0 0 0 0" for n, busy in enumerate((cpu0_busy, cpu1_busy))]
    return "cpu  0 0 0 0 0 0 0 0 0 0\n" + "\n".join(lines) + "\n"


def fake_self(ticks: int) -> str:
    return (
        f"4242 (python (a) b) R 1 1 1 0 -1 0 0 0 0 0 {ticks - ticks // 4} {ticks // 4} 0 0 20 0\n"
    )


class FakeMachine:
    """Readings a test scripts: each interval, how busy each CPU was and how much was ours."""

    def __init__(self):
        self.now, self.cpu0, self.cpu1, self.own = 100.0, 0, 0, 0
        self.threads_set: list[int] = []
        self.slept: list[float] = []

    def run(self, seconds: float, cpu0: float, cpu1: float, own: float) -> None:
        """Advance `seconds` with each CPU busy that fraction of it, `own` cores' worth ours."""
        self.load = (cpu0, cpu1, own)
        self.now += seconds
        self.cpu0 += round(cpu0 * seconds * HZ)
        self.cpu1 += round(cpu1 * seconds * HZ)
        self.own += round(own * seconds * HZ)

    def sleep(self, seconds: float) -> None:  # the machine goes on as it was
        self.slept.append(seconds)
        self.run(seconds, *self.load)

    def governor(self, **kwargs) -> cpu.ThreadGovernor:
        return cpu.ThreadGovernor(
            cpus=[0, 1],
            read=lambda: (fake_stat(self.cpu0, self.cpu1), fake_self(self.own)),
            set_threads=self.threads_set.append,
            clock=lambda: self.now,
            sleep=self.sleep,
            **kwargs,
        )


def test_busy_ticks_count_only_the_usable_cpus_and_not_idle_time():
    assert cpu.busy_ticks(PROC_STAT, [0]) == 400 + 10 + 50 + 3 + 2  # user nice system irq...
    assert cpu.busy_ticks(PROC_STAT, [0, 1]) == 465 + 300 + 40 + 2 + 1
    assert cpu.busy_ticks(PROC_STAT, [5]) == 0


def test_own_ticks_read_past_a_process_name_with_spaces_and_parentheses():
    assert cpu.own_ticks(fake_self(400)) == 400


@pytest.mark.parametrize(
    ("cores", "others", "threads"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 1.9, 1), (2, 3.0, 1), (2, -0.2, 2)]
    + [(4, 1.0, 3), (4, 1.7, 2), (1, 0.0, 1)],
)
def test_free_cores_leave_a_core_to_others_once_they_use_most_of_it(cores, others, threads):
    assert cpu.free_cores(cores, others) == threads


def test_given_one_busy_process_when_epochs_adapt_then_training_gets_one_core_then_both():
    machine = FakeMachine()
    governor = machine.governor(max_threads=2)
    machine.run(2.0, cpu0=1.0, cpu1=1.0, own=1.0)  # decoding beside a busy process
    assert governor.adapt() == 1
    assert governor.others_busy == pytest.approx(1.0)
    machine.run(3.0, cpu0=1.0, cpu1=1.0, own=1.0)  # still there: nothing to change
    assert governor.adapt() == 1
    machine.run(3.0, cpu0=1.0, cpu1=0.05, own=1.0)  # it has gone
    assert governor.adapt() == 2
    assert machine.threads_set == [1, 2]  # set only when the count changes
    assert machine.slept == []


def test_our_own_busy_threads_do_not_count_as_others():
    machine = FakeMachine()
    governor = machine.governor(max_threads=2)
    machine.run(1.0, cpu0=1.0, cpu1=1.0, own=2.0)
    assert governor.adapt() == 2
    assert governor.others_busy == pytest.approx(0.0)


def test_the_first_call_waits_for_a_usable_sample_and_later_quick_calls_keep_the_count():
    machine = FakeMachine()
    governor = machine.governor(max_threads=2)
    machine.run(0.05, cpu0=1.0, cpu1=1.0, own=1.0)
    assert governor.adapt() == 1
    assert machine.slept == [pytest.approx(cpu.SAMPLE_S - 0.05)]
    machine.run(0.1, cpu0=1.0, cpu1=0.0, own=1.0)  # every step may ask: too soon to judge
    assert governor.adapt() == 1
    machine.run(cpu.SAMPLE_S, cpu0=1.0, cpu1=0.0, own=1.0)
    assert governor.adapt() == 2
    assert len(machine.slept) == 1


def test_max_threads_caps_the_count_and_defaults_to_omp_num_threads(monkeypatch):
    machine = FakeMachine()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    governor = machine.governor()
    machine.run(1.0, cpu0=0.0, cpu1=0.0, own=0.0)
    assert governor.max_threads == 1
    assert governor.adapt() == 1


def test_without_proc_the_threads_are_left_alone():
    calls = []
    governor = cpu.ThreadGovernor(
        max_threads=2, cpus=[0, 1], read=lambda: None, set_threads=calls.append
    )
    assert governor.adapt() == 2
    assert calls == []


def test_configure_openmp_keeps_a_value_the_user_set():
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    cpu.configure_openmp(environ)
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE"}
    environ = {}
    cpu.configure_openmp(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=environ | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_importing_sightd_sets_passive_waiting_without_importing_torch():
    result = python(
        "import sys, os, sightd; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    )
    assert result.stdout.split() == ["PASSIVE", "False"]


def test_libgomp_loaded_by_torch_after_sightd_waits_passively():
    # libgomp prints the settings it read from the environment when asked to
    result = python("import sightd, torch; torch.ones(2).sum()", OMP_DISPLAY_ENV="verbose")
    if "OPENMP DISPLAY ENVIRONMENT" not in result.stderr:
        pytest.skip("torch's OpenMP runtime here is not libgomp")
    assert "GOMP_SPINCOUNT = '0'" in result.stderr  # passive: a waiting thread never spins
