"""Every command answers --help; the root help is instant because it imports no torch."""

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


def test_check_config_accepts_the_shipped_config():
    result = CliRunner().invoke(main, ["check-config", "-c", "config.yaml"])
    assert result.exit_code == 0, result.output
    assert "min_confidence: 0.5" in result.output
