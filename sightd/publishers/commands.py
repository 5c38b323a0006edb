"""`sightd capture` and `sightd infer`: one pipeline component in the foreground.

`sightd run` starts the same components under its supervisor; these commands are for running
one part alone (another machine, a debugger, a quick look). Heavy imports stay inside.
"""

from __future__ import annotations

from pathlib import Path

import click

from sightd.cli_options import config_option
from sightd.errors import SightdError


@click.command("capture")
@config_option
@click.option("--camera", help="Camera name from the config (default: the first one).")
@click.option(
    "--source",
    help="Override its source: device index, video file, rtsp/http URL, image folder, synthetic.",
)
@click.option("--fps", type=float, help="Frames published per second; 0 = as fast as possible.")
def capture(config_path: str | None, camera: str | None, source: str | None, fps: float | None):
    """Publish one camera's frames on its frames endpoint until Ctrl-C."""
    from sightd.checks import refuse_insecure_network
    from sightd.config import load_config, override
    from sightd.daemon.forwarder import foreground_status_bus
    from sightd.process import foreground_runtime
    from sightd.publishers.capture import run_capture
    from sightd.sources import validate_cameras, with_source

    config = load_config(config_path)
    name = camera or config.cameras[0].name
    index = [c.name for c in config.cameras].index(config.camera(name).name)
    if source is not None and source.isdigit():
        source = int(source)  # a device index, as in YAML
    cameras = list(config.cameras)
    if source is not None:  # its kind is told by the new source
        cameras[index] = with_source(cameras[index], source)
    cameras[index] = override(cameras[index], f"cameras[{index}]", fps=fps)
    config = config.model_copy(update={"cameras": cameras})
    validate_cameras(config, config_path or "")  # a wrong kind or option: one line, no retries
    refuse_insecure_network(config, config_path)  # as `sightd run` does
    runtime = foreground_runtime(f"capture:{name}", config.log_level)
    with foreground_status_bus(config.transport):
        run_capture(config, name, runtime)


@click.command("infer")
@config_option
@click.option("--model", "model_path", type=click.Path(dir_okay=False), help="Checkpoint file.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Run it here.")
def infer(config_path: str | None, model_path: str | None, device: str | None):
    """Classify the cameras' frames; publish labels, events and status until Ctrl-C.

    A missing model file is an error here (`sightd run` waits for one instead)."""
    from sightd.checks import refuse_insecure_network
    from sightd.config import load_config, override
    from sightd.daemon.forwarder import foreground_status_bus
    from sightd.process import foreground_runtime
    from sightd.publishers.inference import run_inference

    config = load_config(config_path)
    model = override(config.model, "model", path=model_path, device=device)
    config = config.model_copy(update={"model": model})
    refuse_insecure_network(config, config_path)  # as `sightd run` does
    if not Path(model.path).exists():  # alone, no console to train one: a typo, most likely
        raise SightdError(f"model file {model.path} does not exist; train one with `sightd train`")
    runtime = foreground_runtime("infer", config.log_level)
    with foreground_status_bus(config.transport):
        run_inference(config, runtime)
