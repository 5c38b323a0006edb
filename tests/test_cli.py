"""Every command answers --help; the root help is instant because it imports no torch; command
modules never import the CLI that loads them."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from sightd.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "README" not in result.output  # a pip install has no README to read


def test_root_help_points_at_the_help_every_install_has():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "README" not in result.output
    assert "sightd COMMAND --help" in result.output


@pytest.mark.parametrize("module", sorted({entry[0] for entry in COMMANDS.values()}))
def test_a_command_module_imports_without_importing_the_cli(module):
    # given a fresh interpreter; when only the module of a command is imported
    code = f"import sys, {module}; print('sightd.cli' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # then it loads, and the CLI that lists it was never imported
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_root_help_lists_every_command_without_importing_torch():
    code = (
        "import sys; from click.testing import CliRunner; from sightd.cli import main;"
        "r = CliRunner().invoke(main, ['--help']); print(r.output);"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "NO-TORCH" in out
    for name in COMMANDS:
        assert name in out


def test_check_config_reports_a_bad_key_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: fifteen\n")
    result = CliRunner().invoke(main, ["check-config", "-c", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {bad}: train.epochs: expected an integer"
    ]


def test_a_command_whose_module_does_not_import_is_an_error_naming_module_and_exception(
    tmp_path, monkeypatch
):
    (tmp_path / "broken_commands.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS, "broken", ("broken_commands", "broken", "Never loads."))
    result = CliRunner().invoke(main, ["broken", "--help"])
    assert result.exit_code == 1
    assert "No such command" not in result.output
    assert result.output.strip().splitlines() == [
        "Error: command 'broken' (broken_commands:broken) failed to load: importing "
        "broken_commands raised ModuleNotFoundError: No module named 'no_such_dependency'"
    ]


def test_a_command_entry_that_names_no_command_is_an_error(monkeypatch):
    monkeypatch.setitem(COMMANDS, "odd", ("sightd.errors", "SightdError", "Not a command."))
    result = CliRunner().invoke(main, ["odd"])
    assert result.exit_code == 1
    assert "command 'odd' (sightd.errors:SightdError) is not a click.core.Command" in result.output
