"""The one plugin loader: "module:attr" targets, entry-point registries, clear errors."""

import logging
import os.path

import pytest

from sightd.errors import SightdError
from sightd.plugins import PluginError, Registry, is_target, load, load_class
from sightd.sources import Source


def test_a_target_names_a_module_and_a_possibly_dotted_attribute():
    assert load("os.path:join") is os.path.join
    assert load("sightd.plugins:Registry.load") is Registry.load
    assert is_target("a.b:C") and not is_target("webcam") and not is_target(":C")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("webcam", "thing: 'webcam' is not a 'module:attribute' target"),
        ("os.path:nope", "thing (os.path:nope): os.path has no 'nope'"),
        (
            "no_such_module_x:f",
            "thing (no_such_module_x:f) failed to load: importing no_such_module_x raised "
            "ModuleNotFoundError: No module named 'no_such_module_x'",
        ),
    ],
)
def test_a_target_that_does_not_load_is_one_line_naming_it(target, message):
    with pytest.raises(PluginError) as caught:
        load(target, "thing")
    assert str(caught.value) == message
    assert isinstance(caught.value, SightdError)  # the CLI prints it as one line


def test_an_exception_raised_while_importing_is_named_with_its_module(tmp_path, monkeypatch):
    (tmp_path / "explodes.py").write_text("raise RuntimeError('no GPU driver')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"importing explodes raised RuntimeError: no GPU driver"):
        load("explodes:thing", "child target")


def test_load_checks_the_type_of_what_it_loads():
    assert load_class("sightd.sources.synthetic:Synthetic", Source).__name__ == "Synthetic"
    with pytest.raises(PluginError, match="is not a subclass of sightd.sources.base.Source"):
        load_class("collections:OrderedDict", Source)
    with pytest.raises(PluginError, match="is not a builtins.int"):
        load("os:sep", instance_of=int)


def install_fake_plugin(root, group: str, lines: str):
    """An installed distribution (a dist-info folder on the path) with entry points."""
    dist = root / "fake_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")


def test_a_plugin_cannot_take_a_built_in_name_but_may_declare_the_built_in_itself(
    tmp_path, monkeypatch, caplog
):
    group = "sightd.tests.things"
    builtins = {"synthetic": "sightd.sources.synthetic:Synthetic"}
    install_fake_plugin(
        tmp_path,
        group,
        "synthetic = evil:Synthetic\n"
        "extra = sightd.sources.file:VideoFile\n"
        "aaa = sightd.sources.folder:ImageFolder",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(group, builtins, Source, "thing", "things")
    with caplog.at_level(logging.WARNING, logger="sightd.plugins"):
        assert registry.names() == ["synthetic", "aaa", "extra"]  # built-ins, then sorted
    assert "ignoring plugin synthetic (evil:Synthetic): 'synthetic' is a built-in" in caplog.text
    assert registry.load("synthetic").__name__ == "Synthetic"
    assert registry.load("extra").__name__ == "VideoFile"
    with pytest.raises(PluginError, match="unknown thing 'nope'; known things: synthetic, aaa"):
        registry.load("nope", "cfg.yaml: x.kind")
    with pytest.raises(PluginError, match="unknown thing 'os:sep'"):
        registry.load("os:sep")  # targets only where allowed


def test_a_broken_plugin_says_which_one_and_how_to_get_rid_of_it(tmp_path, monkeypatch):
    group = "sightd.tests.broken"
    (tmp_path / "half_installed.py").write_text("import missing_dependency_y\n")
    install_fake_plugin(tmp_path, group, "half = half_installed:Thing")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(group, {}, Source, "thing", "things")
    with pytest.raises(PluginError) as caught:
        registry.load("half", "config.yaml: cameras[0].kind")
    assert str(caught.value) == (
        "config.yaml: cameras[0].kind: thing 'half' (half_installed:Thing) failed to load: "
        "importing half_installed raised ModuleNotFoundError: No module named "
        "'missing_dependency_y'; reinstall or remove that plugin"
    )


def test_subscribers_and_sources_share_the_loader():
    from sightd.sources.registry import REGISTRY as SOURCES
    from sightd.subscribers.registry import REGISTRY as SUBSCRIBERS

    assert isinstance(SOURCES, Registry) and isinstance(SUBSCRIBERS, Registry)
    assert (SOURCES.group, SUBSCRIBERS.group) == ("sightd.sources", "sightd.subscribers")


def test_every_child_target_of_the_supervisor_is_a_loadable_target():
    from sightd.config import SightdConfig
    from sightd.daemon.supervisor import pipeline_specs

    config = SightdConfig.model_validate({"subscribers": [{"type": "print"}]})
    for spec in pipeline_specs(config):
        assert is_target(spec.target), spec
        module, _, attribute = spec.target.partition(":")
        if module != "sightd.publishers.inference":  # torch: loaded by the daemon tests
            assert callable(load(spec.target, "child target"))
