"""Small-data accuracy: `sightd train` on 20 and 50 images a class, scored on a large held-out set.

For each set, count and seed, three methods learn from the same images:

- sightd: `sightd train` with the built-in defaults (an empty config file) and --seed.
- old defaults: the same with --min-steps 0 --augment off --no-calibrate --patience 1000, which
  is what sightd did before the small-data change (15 fixed epochs of batch 64, no
  augmentation, no temperature) except two things no flag turns off: batch norm's statistics
  are recomputed before each validation, and the best-validation epoch is kept.
- svc: scikit-learn's SVC (RBF) on the centre square at 16x16 RGB, standardised, C from
  {1, 10, 100} by 3-fold cross-validation, fitted on the images sightd's split gave to train
  and validation (the test split's few images it leaves out, as sightd does).

The sets (per seed s; 20 a class is always the first 20 of the 50):

- digits: scikit-learn's 1797 digits written as `sightd dataset digits` writes them; 50 a class
  drawn with seed s, and every digit not drawn (1297) held out.
- doors, gestures, textures: benchmarks/camera_set.py's 640x480 webcam-like JPEGs (a doorway
  with its door shut, ajar or open; fist, open hand or pointing finger; brick, grass or gravel),
  the training images generated with seed s and 150 a class held out, generated with seed 1000
  (the same places and people in new frames).

A model is scored as the live worker serves it: Classifier.load(model, "cpu") on the held-out
files decoded the way the worker decodes frames (a JPEG at reduced scale): accuracy, and the
expected calibration error of its (temperature-scaled) probabilities. Training time is the
wall and CPU time of the `sightd train` child (getrusage of the children), import and decode
included. Other work on the machine slows it: the load average is recorded with every run.

    python benchmarks/small_data.py [--sets digits,doors,gestures,textures] [--counts 20,50]
        [--seeds 0,1,2] [--methods sightd,old defaults,svc] [--variant NAME=FLAGS]
        [--quick] [--out small_data.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from camera_set import DOORS, GESTURES, TEXTURES, write_camera_set

SIGHTD = [sys.executable, "-m", "sightd"]
HELD_OUT_SEED = 1000  # the camera sets' held-out images: a seed no training set uses
HELD_OUT_PER_CLASS = 150
OLD_DEFAULTS = ["--min-steps", "0", "--augment", "off", "--no-calibrate", "--patience", "1000"]
METHODS = {"sightd": [], "old defaults": OLD_DEFAULTS, "svc": None}  # None: not sightd train
SVC_SIZE = 16
SVC_C = (1.0, 10.0, 100.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="digits,doors,gestures,textures")
    parser.add_argument("--counts", default="20,50", help="training images a class")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true", help="seed 0, digits and doors at 50")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"of {', '.join(METHODS)} (svc learns from the sightd run's split: run both)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="also `sightd train` with these flags, e.g. 'long=--min-steps 1000' (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    parser.add_argument("--keep", type=Path, help="keep data and runs here (default: a temp dir)")
    args = parser.parse_args()
    if args.quick:
        args.sets, args.counts, args.seeds = "digits,doors", "50", "0"
    chosen = [name for name in args.methods.split(",") if name]  # "" for variants alone
    if set(chosen) - set(METHODS):
        parser.error(f"--methods: choose from {', '.join(METHODS)}")
    methods = {name: METHODS[name] for name in chosen}
    methods |= {name: flags.split() for name, flags in (v.split("=", 1) for v in args.variant)}
    counts = sorted(int(c) for c in args.counts.split(","))

    work = Path(args.keep or tempfile.mkdtemp(prefix="small_data."))
    meta = {"command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    meta |= {"cpus": os.cpu_count(), "load_at_start": os.getloadavg(), "git": git_state()}
    print(f"work folder {work}; load average {fmt_load(meta['load_at_start'])}", flush=True)
    results = []
    try:
        for name in args.sets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                train_files, held_out = make_set(work, name, seed, counts[-1])
                for count in counts:
                    data = copy_first(train_files, count, work / "data" / f"{name}{count}-s{seed}")
                    cell = {"set": name, "count": count, "seed": seed}
                    for method, flags in methods.items():
                        row = cell | {"method": method}
                        row |= run_method(method, flags, data, work / "runs", seed, held_out)
                        report_run(row)
                        results.append(row)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta["load_at_end"] = os.getloadavg()
    print(f"\nload average at the end {fmt_load(meta['load_at_end'])}")
    print(markdown_table(results))
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "runs": results}, indent=1) + "\n")
        print(f"wrote {args.out}")


def run_method(method: str, flags, data: Path, runs: Path, seed: int, held_out) -> dict:
    """One method on one training folder: `sightd train` with flags, or the SVC (flags None),
    which learns from the split of the sightd run on the same folder (run it first)."""
    if flags is None:
        return svc_row(data, runs / f"{data.name}-sightd", held_out)
    run = runs / f"{data.name}-{method.replace(' ', '-')}"
    return train_and_score(data, run, seed, flags, held_out)


# --- the sets -------------------------------------------------------------------------------


def make_set(work: Path, name: str, seed: int, count: int):
    """({class: training files, in draw order}, [(held-out file, class)]) of one set and seed."""
    if name == "digits":
        every = work / "digits-all"
        if not every.exists():
            from sightd.trainer.digits import write_digits_dataset

            write_digits_dataset(every)
        rng = np.random.default_rng(seed)
        train, held_out = {}, []
        for folder in sorted(p for p in every.iterdir() if p.is_dir()):
            files = sorted(folder.iterdir())
            files = [files[i] for i in rng.permutation(len(files))]
            train[folder.name] = files[:count]
            held_out += [(path, folder.name) for path in files[count:]]
        return train, held_out
    classes = {"doors": DOORS, "gestures": GESTURES, "textures": TEXTURES}[name]
    pool = work / f"{name}-s{seed}"
    if not pool.exists():
        write_camera_set(pool, count, seed, classes)
    held = work / f"{name}-held-out"
    if not held.exists():
        write_camera_set(held, HELD_OUT_PER_CLASS, HELD_OUT_SEED, classes)
    train = {c: sorted((pool / c).iterdir())[:count] for c in classes}
    return train, [(path, c) for c in classes for path in sorted((held / c).iterdir())]


def copy_first(train_files: dict[str, list[Path]], count: int, root: Path) -> Path:
    """A folder-per-class set of the first `count` files of each class."""
    for name, files in train_files.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for path in files[:count]:
            shutil.copyfile(path, root / name / path.name)
    return root


# --- the methods ----------------------------------------------------------------------------


def train_and_score(data: Path, run: Path, seed: int, flags: list[str], held_out) -> dict:
    """Run `sightd train` on data (timed) and score its model on the held-out images."""
    config = run.parent / "empty.yaml"  # the built-in defaults, whatever ./config.yaml says
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("{}\n")
    command = [*SIGHTD, "train", str(data), "--out", str(run), "-c", str(config)]
    command += ["--seed", str(seed), *flags]
    load, before = os.getloadavg()[0], resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (run / "train.log").parent.mkdir(parents=True, exist_ok=True)
    (run / "train.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    metrics = json.loads((run / "metrics.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row = {"flags": flags, "wall_s": wall, "cpu_s": cpu, "load_1min": [load, os.getloadavg()[0]]}
    row["first_line"] = next(line for line in done.stdout.splitlines() if "images," in line)
    row |= held_out_scores(run / "model.safetensors", held_out)
    row["split_test_accuracy"] = metrics["test_accuracy"]
    row["split_ece"] = [metrics["calibration"][k] for k in ("test_ece_before", "test_ece_after")]
    row["temperature"] = metrics["calibration"]["temperature"]
    row["plan"], row["best_epoch"] = metrics["plan"], metrics["best_epoch"]
    row["epochs"] = [
        {k: e[k] for k in ("epoch", "train_loss", "val_accuracy", "val_loss")}
        for e in metrics["epochs"]
    ]
    return row


_DECODED: dict[tuple, list] = {}  # held-out frames, decoded once per set and input size


def frames_of(paths: list[Path], size: int) -> list[np.ndarray]:
    from sightd.images import read_image

    key = (tuple(paths), size)
    if key not in _DECODED:
        _DECODED.clear()  # one set at a time: keeps memory at one held-out set
        _DECODED[key] = [read_image(p, size) for p in paths]  # reduced, as the worker decodes
    return _DECODED[key]


def held_out_scores(model_path: Path, held_out) -> dict:
    """Accuracy and calibration error of the model, served as the worker serves it."""
    import torch

    from sightd.classifier import Classifier
    from sightd.preprocessing import preprocess_numpy
    from sightd.trainer.metrics import expected_calibration_error

    classifier = Classifier.load(model_path, "cpu")
    info = classifier.info
    frames = frames_of([path for path, _ in held_out], info.image_size)
    truth = np.array([info.classes.index(name) for _, name in held_out])
    logits = torch.from_numpy(
        np.concatenate(
            [
                classifier.logits(
                    preprocess_numpy(frames[i : i + 256], info.image_size, info.mean, info.std)
                )
                for i in range(0, len(frames), 256)
            ]
        )
    )
    row = {"held_out_images": len(frames)}
    for key, temperature in (("held_out_ece_raw", 1.0), ("held_out_ece", info.temperature)):
        probabilities = torch.softmax(logits / temperature, dim=1).numpy()
        predicted = probabilities.argmax(axis=1)
        row[key] = expected_calibration_error(probabilities.max(axis=1), predicted == truth)
    row["accuracy"] = float((predicted == truth).mean())
    return row


def svc_row(data: Path, sightd_run: Path, held_out) -> dict:
    """The SVC on the files sightd's run used to train and validate, scored on held_out."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    split = json.loads((sightd_run / "split.json").read_text())
    files = split["train"] + split["val"]
    x = pixels([data / f for f in files])
    y = [f.split("/")[0] for f in files]
    start, cpu = time.perf_counter(), time.process_time()
    search = GridSearchCV(make_pipeline(StandardScaler(), SVC()), {"svc__C": SVC_C}, cv=3)
    search.fit(x, y)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    predicted = search.predict(pixels([path for path, _ in held_out]))
    truth = np.array([name for _, name in held_out])
    return {
        "accuracy": float((predicted == truth).mean()),
        "held_out_images": len(truth),
        "wall_s": wall,
        "cpu_s": cpu,
        "C": search.best_params_["svc__C"],
        "images": len(files),
    }


def pixels(paths: list[Path]) -> np.ndarray:
    """Each image's centre square (sightd's crop) at SVC_SIZE x SVC_SIZE RGB, in 0..1."""
    from sightd.images import read_image
    from sightd.preprocessing import resize_rgb

    images = [resize_rgb(read_image(p, SVC_SIZE), SVC_SIZE) for p in paths]
    return np.stack(images).reshape(len(images), -1) / 255.0


# --- reporting ------------------------------------------------------------------------------


def report_run(row: dict) -> None:
    line = f"{row['set']} {row['count']}/class seed {row['seed']} {row['method']}: "
    line += f"held-out accuracy {row['accuracy']:.4f} ({row['held_out_images']} images)"
    line += f", train {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU"
    if "first_line" in row:
        line += f", load {row['load_1min'][0]:.1f}; ECE {row['held_out_ece']:.3f}"
        line += f"\n    {row['first_line']}"
    print(line, flush=True)


def markdown_table(results: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in results})
    head = ["set", "a class", "method", *(f"seed {s}" for s in seeds), "mean", "min"]
    head += ["held-out ECE", "wall s", "CPU s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = dict.fromkeys((r["set"], r["count"], r["method"]) for r in results)
    for name, count, method in keys:
        rows = [r for r in results if (r["set"], r["count"], r["method"]) == (name, count, method)]
        by_seed = {r["seed"]: r["accuracy"] for r in rows}
        accuracy = list(by_seed.values())
        cells = [name, str(count), method]
        cells += [f"{by_seed[s]:.3f}" if s in by_seed else "" for s in seeds]
        cells += [f"{np.mean(accuracy):.3f}", f"{min(accuracy):.3f}"]
        ece = [r["held_out_ece"] for r in rows if "held_out_ece" in r]
        cells.append(f"{np.mean(ece):.3f}" if ece else "")
        cells += [f"{np.mean([r[k] for r in rows]):.1f}" for k in ("wall_s", "cpu_s")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt_load(load) -> str:
    return " ".join(f"{v:.2f}" for v in load)


def git_state() -> dict:
    """The commit measured, and whether sightd/ had changes not yet committed."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "sightd_dirty": bool(git("status", "--porcelain", "--", "../sightd")),
    }


if __name__ == "__main__":
    main()
