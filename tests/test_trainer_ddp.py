"""`sightd train --nproc 2` and torchrun: two real CPU processes (gloo) train as one would.

Given the digits (real data, no download) at 32 px for 3 epochs, one process and `--nproc 2`
each train; then the split is the one-process split, rank 0 alone wrote one run folder that
loads, and accuracy is within noise of one process's. `torchrun --nproc-per-node 2` trains 20
digits a class the same way. A rank killed mid-training stops the other with one clear line.
Waits are generous, and nothing is timed: the cores are shared.
"""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import wait_for

from sightd.checkpoint import load_checkpoint
from sightd.cli import main
from sightd.config import TrainConfig
from sightd.cpu import usable_cpus
from sightd.trainer import distributed
from sightd.trainer.data import load_folder, save_split, split_indices

pytestmark = pytest.mark.slow
ARGS = ["--image-size", "32", "--epochs", "3", "--min-steps", "0", "--seed", "0"]
RUN_TIMEOUT_S = 600  # three python processes importing torch on two busy cores


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """scikit-learn's 1797 digits as 32 px PNGs, one folder per digit (`sightd dataset digits`
    writes them at 64 px and fsyncs each file, which on busy shared disks takes a while)."""
    import cv2  # here, not at the top: the ranks of draw_shares import this module
    import numpy as np
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits") / "digits"
    bundled = load_digits()
    for index, (image, target) in enumerate(zip(bundled.images, bundled.target, strict=True)):
        big = cv2.resize(
            image.astype(np.float32) * (255 / 16), (32, 32), interpolation=cv2.INTER_CUBIC
        )
        (root / str(target)).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / str(target) / f"{index:04d}.png"), big.clip(0, 255).astype(np.uint8))
    return root


def config(tmp: Path) -> Path:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({"train": {"out_dir": str(tmp / "runs")}}))
    return path


def train_in(tmp: Path, command: list[str]) -> tuple[Path, str]:
    """Run a training command with out_dir tmp/runs; (the one run folder, stdout)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = sorted(p.name for p in (tmp / "runs").iterdir())
    assert len(runs) == 2 and "latest" in runs, runs  # one run folder, and latest
    return (tmp / "runs" / "latest").resolve(), done.stdout


@pytest.fixture(scope="module")
def single(digits, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    result = CliRunner().invoke(main, ["train", str(digits), "-c", str(config(tmp)), *ARGS])
    assert result.exit_code == 0, result.output
    return (tmp / "runs" / "latest").resolve()


@pytest.fixture(scope="module")
def two(digits, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nproc2")
    progress = tmp / "progress.jsonl"
    command = [sys.executable, "-m", "sightd", "train", str(digits), "-c", str(config(tmp))]
    run, stdout = train_in(tmp, [*command, *ARGS, "--nproc", "2", "--progress-file", str(progress)])
    return run, stdout, progress


def read(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


def within_noise(a: float, b: float, n: int) -> bool:
    """The same test images, trained apart: three standard deviations of the difference of
    two binomial accuracies (independent errors, the mean accuracy), at least three images.
    Batch order, augmentation draws and per-rank batch norm all differ, so no closer match
    is owed; the spread of three seeds of one process on full digits is 0.011 (README)."""
    p = (a + b) / 2
    return abs(a - b) <= max(3 * math.sqrt(2 * p * (1 - p) / n), 3 / n)


def test_nproc_2_splits_as_one_process_and_rank_0_alone_writes_the_run(single, two):
    run, stdout, progress = two
    assert read(run, "split.json") == read(single, "split.json")
    metrics = read(run, "metrics.json")
    assert metrics["processes"] == 2 and read(single, "metrics.json")["processes"] == 1
    # every training image once an epoch, over both ranks together
    assert [row["images"] for row in metrics["epochs"]] == [
        len(read(run, "split.json")["train"])
    ] * 3
    events = [json.loads(line)["event"] for line in progress.read_text().splitlines()]
    assert events == ["plan", "epoch", "epoch", "epoch", "done"]
    assert stdout.count("1797 images, 10 classes") == 1 and "x 2 processes" in stdout
    assert stdout.count("train loss") == 3
    info = load_checkpoint(run / "model.safetensors").info
    assert info.classes == [str(d) for d in range(10)] and info.image_size == 32
    for name in ["curves.png", "confusion_matrix.png", "calibration.png"]:
        assert (run / name).read_bytes().startswith(b"\x89PNG")


def test_nproc_2_model_loads_and_learns_as_well_as_one_process(digits, single, two):
    run = two[0]
    one, ddp = (read(r, "metrics.json")["test_accuracy"] for r in (single, run))
    n = len(read(run, "split.json")["test"])
    assert min(one, ddp) >= 0.9, (one, ddp)  # both learnt (chance is 0.1)
    assert within_noise(one, ddp, n), (one, ddp, n)
    result = CliRunner().invoke(main, ["eval", str(run / "model.safetensors"), str(digits)])
    assert result.exit_code == 0, result.output
    assert f"accuracy {ddp:.4f}" in result.output  # what was saved is what was scored


def few_digits(digits: Path, root: Path, per_class: int) -> Path:
    """The first images of each digit: quick to decode, for a run that only has to start."""
    for folder in sorted(digits.iterdir()):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            (root / folder.name / image.name).write_bytes(image.read_bytes())
    return root


def test_torchrun_trains_the_same_way(digits, tmp_path):
    data = few_digits(digits, tmp_path / "few", 20)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "sightd", "train", str(data)]
    run, stdout = train_in(tmp_path, [*command, "-c", str(config(tmp_path)), *ARGS])
    loaded = load_folder(data, 32)  # the split one process makes of this folder, as it saves it
    one = split_indices(loaded.labels, loaded.classes, TrainConfig().split, 0)
    save_split(tmp_path / "one.json", loaded, one, 0)
    assert read(run, "split.json") == read(tmp_path, "one.json")
    metrics = read(run, "metrics.json")
    assert metrics["processes"] == 2 and stdout.count("train loss") == 3
    info = load_checkpoint(run / "model.safetensors").info
    assert info.test_accuracy == pytest.approx(metrics["test_accuracy"])


def rank_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of the launcher's children, told apart by their process titles."""
    found = {}
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if title.startswith("sightd.train:rank"):
                found[int(title.removeprefix("sightd.train:rank"))] = int(pid)
    return found


def test_a_killed_rank_stops_the_other_with_one_clear_line(digits, tmp_path):
    progress, data = tmp_path / "progress.jsonl", few_digits(digits, tmp_path / "few", 20)
    command = [sys.executable, "-m", "sightd", "train", str(data), "-c", str(config(tmp_path))]
    command += ["--image-size", "32", "--epochs", "300", "--min-steps", "0"]
    launcher = subprocess.Popen(
        [*command, "--nproc", "2", "--progress-file", str(progress)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: progress.exists() and '"epoch"' in progress.read_text(), 300, "epoch 1")
        ranks = rank_pids(launcher.pid)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()  # the ranks follow their launcher (parent-death signal)
        launcher.wait()
    assert launcher.returncode == 1
    assert stderr.strip().splitlines()[-1] == (
        "Error: training process 1 of 2 was killed by SIGKILL; the other processes were stopped"
    )
    assert "Traceback" not in stderr
    assert not Path(f"/proc/{ranks[0]}").exists()  # stopped, and reaped by the launcher
    (run,) = [p for p in (tmp_path / "runs").iterdir()]
    assert sorted(p.name for p in run.iterdir()) == ["split.json"]  # whole files or none


def test_a_user_error_in_the_ranks_is_one_line(digits, tmp_path):
    data = few_digits(digits, tmp_path / "few", 20)
    for image in sorted((data / "7").iterdir())[3:]:
        image.unlink()  # three sevens: too few to split, found once the ranks have decoded
    command = [sys.executable, "-m", "sightd", "train", str(data), "-c", str(config(tmp_path))]
    done = subprocess.run(
        [*command, "--nproc", "2"], capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("Error: too few images to train on: class '7' has 3")


def draw_shares(rank: int, store_file: str, out_dir: str) -> None:
    """One rank of a real two-process gloo group: its rows of each batch of two epochs."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    store = torch.distributed.FileStore(store_file, 2)
    with distributed.process_group("gloo", rank, store, rank=rank, world_size=2):
        shuffle = distributed.shared_generator(0)
        epochs = [distributed.epoch_batches(101, 16, shuffle, "cpu") for _ in range(2)]
    rows = [[(index.tolist(), weight) for index, weight in epoch] for epoch in epochs]
    Path(out_dir, f"{rank}.json").write_text(json.dumps(rows))


def test_each_rank_trains_on_its_own_share_of_the_same_global_batches(tmp_path):
    torch.multiprocessing.start_processes(
        draw_shares, (str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    zero, one = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    orders = []
    for epoch_zero, epoch_one in zip(zero, one, strict=True):
        assert len(epoch_zero) == len(epoch_one) == 7  # 6 x 16 and a last 5, shared 3 + 2
        seen = []
        for (a, weight_a), (b, weight_b) in zip(epoch_zero, epoch_one, strict=True):
            assert not set(a) & set(b) and abs(len(a) - len(b)) <= 1
            assert weight_a == len(a) * 2 / (len(a) + len(b))
            assert weight_a + weight_b == pytest.approx(2)  # together: the batch's mean
            seen += a + b
        assert sorted(seen) == list(range(101))  # every row once an epoch
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled each epoch


def test_bad_requests_fail_before_any_process_starts(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default config's runs/ would go
    runner = CliRunner()
    small = runner.invoke(main, ["train", str(digits), "--nproc", "2", "--batch-size", "3"])
    missing = runner.invoke(main, ["train", str(tmp_path / "nothing"), "--nproc", "2"])
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):
        monkeypatch.setenv(name, "0" if name != "WORLD_SIZE" else "2")
    both = runner.invoke(main, ["train", str(digits), "--nproc", "2"])
    for result, words in [
        (small, "--batch-size 4 or more"),
        (missing, "does not exist"),
        (both, "--nproc and torchrun both start processes"),
    ]:
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert words in result.output
    assert not (tmp_path / "runs").exists()


def test_each_rank_gets_its_share_of_the_cores_and_a_users_setting_is_kept(monkeypatch):
    cores = len(usable_cpus())
    for name in ("OMP_NUM_THREADS", "GLOO_SOCKET_IFNAME"):
        monkeypatch.delenv(name, raising=False)
    with distributed._children_env(2):  # what the spawned ranks inherit
        assert os.environ["OMP_NUM_THREADS"] == str(max(1, cores // 2))
        assert os.environ["GLOO_SOCKET_IFNAME"] == "lo"
    assert "OMP_NUM_THREADS" not in os.environ  # this process's own environment restored
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with distributed._children_env(2):
        assert os.environ["OMP_NUM_THREADS"] == "3"
