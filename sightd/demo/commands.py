"""`sightd demo`: the command; what it runs is in sightd.demo.run.

Module-level imports stay light (no torch, no cv2): `sightd --help` must stay instant.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option(
    "--seconds",
    type=click.FloatRange(5, 3600),
    default=40.0,
    show_default=True,
    help="How long the live part runs, from the first label.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data set, model and video go here (default: ~/.cache/sightd/demo); reused next time.",
)
@click.option(
    "--epochs",
    type=click.IntRange(1, 1000),
    default=None,
    help="Training epochs for the demo model (default 20: short, on camera-like augmentation).",
)
@click.option("--retrain", is_flag=True, help="Train again even if a cached model fits.")
@click.option(
    "--keep",
    is_flag=True,
    help="After the scored pass keep the pipeline and console up until Ctrl-C, with Teach "
    "set up in the workdir (deploy points runs/latest at a run; the worker reloads it).",
)
def demo(seconds: float, workdir: str | None, epochs: int | None, retrain: bool, keep: bool):
    """Train on digits and run the live pipeline on a video: no camera, no data needed.

    Writes the digits data set, trains a model (reused next time), films held-out digit cards
    in a known order, runs the real supervisor on that video with a print subscriber, and ends
    with the accuracy of the events against the cards shown and the latency percentiles.
    With --keep it then keeps running, printing the console's URL: record, train and deploy
    from its Teach page.
    """
    from sightd.demo.run import DEMO_EPOCHS, default_workdir, run_demo

    folder = Path(workdir) if workdir else default_workdir()
    run_demo(folder, seconds, epochs or DEMO_EPOCHS, retrain, keep)
