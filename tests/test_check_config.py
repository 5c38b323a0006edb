"""`sightd check-config`: beyond keys and types, what `sightd run` would refuse or trip on."""

import socket
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import color_frame, free_port, write_video

from sightd.cli import main
from sightd.curve import generate_keys

SHIPPED = Path(__file__).parents[1] / "config.yaml"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with a model file where the shipped config looks for one; the cwd."""
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "runs" / "latest" / "model.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"{}")
    return tmp_path


def write_config(folder: Path, **sections) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    data.update(sections)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def check(path: Path):
    """(exit code, the lines on stderr); with an error nothing goes to stdout."""
    result = CliRunner().invoke(main, ["check-config", "-c", str(path)])
    if result.exit_code:
        assert result.stdout == ""
    return result.exit_code, result.stderr.strip().splitlines()


def test_the_shipped_config_is_ok_where_a_model_has_been_trained(workdir):
    result = CliRunner().invoke(main, ["check-config", "-c", str(SHIPPED)])
    assert result.exit_code == 0, result.output
    assert "min_confidence: 0.5" in result.stdout
    assert result.stderr.strip() == "# config OK"


def test_a_missing_model_is_a_warning_naming_model_path(tmp_path, monkeypatch):
    # a first run: `sightd run` starts without it and the console can train one
    monkeypatch.chdir(tmp_path)
    code, lines = check(write_config(tmp_path))
    assert code == 0
    assert lines == [
        f"Warning: {tmp_path / 'config.yaml'}: model.path: model file "
        "runs/latest/model.safetensors does not exist yet; `sightd run` starts without it and "
        "its worker waits for it: train one in the console's Teach page or with `sightd train`, "
        "or set model.path to a model.safetensors",
        "# config OK (1 warning)",
    ]


def test_a_model_path_that_is_a_folder_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "latest" / "model.safetensors").mkdir(parents=True)
    code, lines = check(write_config(tmp_path))
    assert code == 1
    assert lines == [
        f"Error: {tmp_path / 'config.yaml'}: model.path: model file "
        "runs/latest/model.safetensors is a folder, not a model file; train one with "
        "`sightd train` or set model.path to a model.safetensors",
    ]


def test_missing_videos_folders_and_urls_are_errors_naming_each_camera(workdir):
    video = write_video(workdir / "clip.avi", [color_frame("red", (48, 64))] * 3)
    cameras = [
        {"name": "ok", "source": str(video)},
        {"name": "gone", "source": str(workdir / "gone.avi")},
        {"name": "nofolder", "source": str(workdir / "shots"), "kind": "folder"},
        {"name": "notafile", "source": str(workdir), "kind": "file"},
        {"name": "pattern", "source": "synthetic"},
        {"name": "nourl", "source": "cam.local/live", "kind": "stream"},
    ]
    path = write_config(workdir, cameras=cameras)
    code, lines = check(path)
    assert code == 1
    assert lines == [
        f"Error: {path}: cameras[1].source: no video file or image folder at "
        f"{workdir / 'gone.avi'}; fix the path or create it",
        f"Error: {path}: cameras[2].source: no image folder at {workdir / 'shots'}; fix the "
        "path or create it",
        f"Error: {path}: cameras[3].source: {workdir} is not a file; give a video file (or "
        "kind: folder for images)",
        f"Error: {path}: cameras[5].source: 'cam.local/live' is not a URL; give one such as "
        "rtsp://host/path",
    ]


def test_a_camera_option_error_is_reported_with_its_yaml_path(workdir):
    cameras = [
        {"name": "a", "source": 0, "options": {"fourcc": "MJPEG"}},
        {"name": "b", "source": "rtsp://cam/live", "options": {"rtsp_transport": "tcp"}},
        {"name": "c", "source": "synthetic", "kind": "nope"},
    ]
    path = write_config(workdir, cameras=cameras)
    code, lines = check(path)
    assert code == 1
    assert lines[0] == (
        f'Error: {path}: cameras[0].options.fourcc: expected four ASCII characters, e.g. "MJPG" '
        'or "YUYV"'
    )
    assert lines[1].startswith(f"Error: {path}: cameras[2].kind: unknown source kind 'nope'")
    assert len(lines) == 2


def test_curve_on_without_key_files_names_each_missing_file(workdir):
    keys = workdir / "keys"
    transport = {"curve": True, "keys_dir": str(keys)}
    path = write_config(workdir, transport=transport)
    code, lines = check(path)
    assert code == 1
    hint = (
        "transport.curve is on; create them with `sightd keys generate` or fix transport.keys_dir"
    )
    assert lines == [
        f"Error: {path}: transport.keys_dir: CURVE key file {keys / 'server.key_secret'} "
        f"(the server's key pair) is missing and {hint}",
        f"Error: {path}: transport.keys_dir: CURVE key file {keys / 'server.key'} "
        f"(the server's public key) is missing and {hint}",
        f"Error: {path}: transport.client_key: CURVE key file {keys / 'client.key_secret'} "
        f"(this host's client key pair) is missing and {hint}",
        f"Error: {path}: transport.keys_dir: CURVE folder {keys / 'authorized'} (the client "
        f"keys servers accept) is missing and {hint}",
    ]
    generate_keys(keys, ["client"])
    assert check(path) == (0, ["# config OK"])


def test_an_unreachable_mqtt_broker_is_a_warning_not_an_error(workdir):
    closed = free_port()  # nothing listens there
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        subscribers = [
            {"type": "mqtt", "host": "127.0.0.1", "port": closed},
            {"type": "mqtt", "host": "127.0.0.1", "port": port},
        ]
        path = write_config(workdir, subscribers=subscribers)
        code, lines = check(path)
    assert code == 0
    assert lines == [
        f"Warning: {path}: subscribers[0].host: MQTT broker 127.0.0.1:{closed} does not answer "
        "(connection refused); start it or fix host and port (`sightd run` starts anyway and "
        "keeps trying)",
        "# config OK (1 warning)",
    ]


def test_every_subscriber_error_is_reported_not_only_the_first(workdir):
    subscribers = [{"type": "prnt"}, {"type": "log"}, {"type": "webhook", "url": 5}]
    code, lines = check(write_config(workdir, subscribers=subscribers))
    assert code == 1
    assert [line.split(": ")[2] for line in lines] == [
        "subscribers[0].type",
        "subscribers[1].path",
        "subscribers[2].url",
    ]


def test_an_engine_that_is_not_installed_is_an_error_saying_how_to_install_it(workdir, monkeypatch):
    from sightd.engines import base

    monkeypatch.setattr(base, "installed", lambda name: name == "torch")
    code, lines = check(write_config(workdir, model={"engine": "openvino"}))
    assert code == 1
    assert lines == [
        f"Error: {workdir / 'config.yaml'}: model.engine: engine 'openvino' is not installed; "
        "pip install 'sightd[openvino]' or set model.engine: auto"
    ]


def test_an_endpoint_beyond_loopback_without_curve_is_an_error_naming_it(workdir):
    # given a deployment across hosts: cameras and the hub on the network, CURVE off
    transport = {"labels": "tcp://10.1.0.4:5551", "status": "tcp://[::1]:5552"}
    cameras = [
        {"name": "cam0", "source": "synthetic", "endpoint": "tcp://10.1.0.1:5550"},
        {"name": "cam1", "source": "synthetic", "endpoint": "ipc:///run/sightd/cam1"},
    ]
    path = write_config(workdir, transport=transport, cameras=cameras)
    # then each endpoint off loopback is named (loopback and ipc:// are not), with what to do
    code, lines = check(path)
    assert code == 1
    fix = (
        "can be reached from other machines but transport.curve is false; set transport.curve: "
        "true (docs/security.md: `sightd keys generate`), or transport.insecure_network: true "
        "on a network you trust"
    )
    assert lines == [
        f"Error: {path}: transport.labels: tcp://10.1.0.4:5551 {fix}",
        f"Error: {path}: cameras[0].endpoint: tcp://10.1.0.1:5550 {fix}",
    ]
    # when the network is declared trusted, or CURVE is on with its keys, then it is fine
    insecure = write_config(
        workdir, transport={**transport, "insecure_network": True}, cameras=cameras
    )
    assert check(insecure) == (0, ["# config OK"])
    generate_keys(workdir / "keys", ["client"])
    secure = {**transport, "curve": True, "keys_dir": str(workdir / "keys")}
    assert check(write_config(workdir, transport=secure, cameras=cameras)) == (0, ["# config OK"])


def test_a_derived_camera_endpoint_off_loopback_is_named_as_derived(workdir):
    cameras = [{"name": "cam0", "source": "synthetic"}, {"name": "cam1", "source": "synthetic"}]
    path = write_config(workdir, transport={"frames": "tcp://0.0.0.0:5550"}, cameras=cameras)
    code, lines = check(path)
    assert code == 1
    assert [line.split(": ")[2] for line in lines] == [
        "transport.frames",
        "cameras[1] (derived)",  # camera 0's is transport.frames itself, named once
    ]
    assert "tcp://0.0.0.0:5560 can be reached from other machines" in lines[1]


def test_a_network_http_listen_without_token_env_is_an_error(workdir, monkeypatch):
    # given the console on every interface and no token
    path = write_config(workdir, http={"listen": "0.0.0.0:8765"})
    code, lines = check(path)
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"Error: {path}: http.listen 0.0.0.0:8765 can be reached from")
    assert "set http.token_env" in lines[0]
    # when token_env names a variable unset here (the service may set it): a warning
    monkeypatch.delenv("SIGHTD_TEST_TOKEN", raising=False)
    path = write_config(workdir, http={"listen": "0.0.0.0:8765", "token_env": "SIGHTD_TEST_TOKEN"})
    code, lines = check(path)
    assert code == 0
    assert lines[0].startswith(f"Warning: {path}: http.token_env names SIGHTD_TEST_TOKEN")
    # and once it is set, all is well
    monkeypatch.setenv("SIGHTD_TEST_TOKEN", "x" * 32)
    assert check(path) == (0, ["# config OK"])


def test_workers_naming_an_unknown_or_shared_camera_are_one_line_errors(workdir):
    cameras = [{"name": "cam0", "source": "synthetic"}, {"name": "cam1", "source": "synthetic"}]
    cases = {
        "worker 'a' names camera 'cam9', which is not in cameras (cam0, cam1)": [
            {"name": "a", "cameras": ["cam0", "cam9"]},
            {"name": "b", "cameras": ["cam1"]},
        ],
        "camera 'cam0' is given to workers 'a' and 'b'": [
            {"name": "a", "cameras": ["cam0"]},
            {"name": "b", "cameras": ["cam0", "cam1"]},
        ],
        "camera(s) cam1 belong to no worker": [{"name": "a", "cameras": ["cam0"]}],
    }
    for message, workers in cases.items():
        path = write_config(workdir, cameras=cameras, workers=workers)
        result = CliRunner().invoke(main, ["check-config", "-c", str(path)])
        assert result.exit_code == 1
        assert f"Error: {path}: workers: {message}" in result.output
        assert "Traceback" not in result.output


def test_a_host_checks_what_its_roles_need_only(tmp_path, monkeypatch):
    # given a camera host: its video here, no model (the worker's host has it), cam1 elsewhere
    monkeypatch.chdir(tmp_path)
    video = write_video(tmp_path / "cam0.avi", [color_frame("red", (48, 64))] * 3)
    cameras = [{"name": "cam0", "source": str(video)}, {"name": "cam1", "source": "/elsewhere.avi"}]
    path = write_config(tmp_path, cameras=cameras)
    # then checked as a whole the missing model is a warning and cam1's video an error
    code, lines = check(path)
    assert code == 1 and [line.split(":")[0] for line in lines] == ["Error", "Warning"], lines
    # but as cam0's capture host there is nothing wrong
    result = CliRunner().invoke(
        main, ["check-config", "-c", str(path), "--role", "capture", "--camera", "cam0"]
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "# config OK"
    # and as the worker's host, the missing model is the one problem: a warning (it waits)
    result = CliRunner().invoke(main, ["check-config", "-c", str(path), "--role", "infer"])
    assert result.exit_code == 0 and result.stderr.count("Warning:") == 1, result.output
    assert "model.path: model file" in result.stderr and "Error:" not in result.stderr


def test_a_named_workers_host_binds_nothing_so_needs_no_server_secret(workdir):
    # given the GPU host's keys: the server's public key and its own client pair, no secret
    keys = workdir / "keys"
    generate_keys(workdir / "hub-keys", [])
    generate_keys(keys, ["client"], server=False)
    (keys / "server.key").write_bytes((workdir / "hub-keys" / "server.key").read_bytes())
    transport = {"curve": True, "keys_dir": str(keys)}
    workers = [{"name": "gpu", "cameras": ["cam0"]}]
    path = write_config(workdir, transport=transport, workers=workers)
    # then as the worker's host it is fine, but a host that binds needs the server pair
    result = CliRunner().invoke(main, ["check-config", "-c", str(path), "--role", "infer"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["check-config", "-c", str(path), "--role", "capture"])
    assert result.exit_code == 1 and "server.key_secret (the server's key pair)" in result.stderr
