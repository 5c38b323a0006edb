"""`sightd explain`: Grad-CAM overlays of image files, one PNG each.

Module level stays light (click only) so that listing commands never imports torch.
"""

from __future__ import annotations

import sys

import click

from sightd.trainer.commands import device_option, expand_images, read_or_skip


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("images", metavar="IMAGE_OR_FOLDER...", nargs=-1, required=True)
@click.option(
    "--out",
    "out_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    default="explained",
    show_default=True,
    help="Folder for the overlays (created when missing).",
)
@device_option
def explain(model_path, images, out_dir, device):
    """Show where MODEL looked: a Grad-CAM heat map over each image.

    Writes DIR/<image name>.png, the image's centre square (what the model sees) with the heat
    map of the label over it, red where the evidence for it is strongest, and prints one line
    per image: path, label, calibrated confidence, the overlay's file. A folder stands for
    every image file under it. A file that is missing or cannot be decoded is reported on
    stderr; the others are still explained and the exit status is then 1.
    """
    from pathlib import Path

    from sightd.atomic import atomic_write_bytes
    from sightd.explain.gradcam import MAX_SIDE, Explainer, encode_png
    from sightd.images import read_image

    explainer = Explainer(model_path, device or "auto")
    paths, failed = expand_images(images)
    out, taken = Path(out_dir), set()
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shown = read_or_skip(path, MAX_SIDE)  # a JPEG decodes reduced, no smaller than shown
        if shown is None:
            failed += 1
            continue
        # the network's pixels as predict and the worker decode them, for the same confidence
        network_image = read_image(path, explainer.info.image_size)
        result = explainer.explain(shown, network_image=network_image)
        target = _free_name(out, Path(path), taken)
        atomic_write_bytes(target, encode_png(result.overlay_bgr))
        click.echo(f"{path}: {result.label} {result.confidence:.4f} -> {target}")
    if failed:
        sys.exit(1)


def _free_name(folder, image, taken: set):
    """folder/<image's stem>.png, or stem-2.png, stem-3.png, ... when another image of this run
    took the name or it is the image itself (never overwrite what is explained)."""
    name, n = f"{image.stem}.png", 1
    while name in taken or (folder / name).resolve() == image.resolve():
        n += 1
        name = f"{image.stem}-{n}.png"
    taken.add(name)
    return folder / name
