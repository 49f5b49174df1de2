"""`warpgate receive` never lets the sender pick a dangerous place or name."""

from __future__ import annotations

from pathlib import Path

import pytest

from warpgate.cli.peer_options import CommandError
from warpgate.cli.transfer import _target_path


def test_only_the_base_name_is_used(tmp_path: Path) -> None:
    assert _target_path(tmp_path, "../../etc/passwd") == tmp_path / "passwd"
    assert _target_path(tmp_path, "C:\\\\Windows\\\\evil.dll") == tmp_path / "evil.dll"


@pytest.mark.parametrize("name", [".profile", ".bash_aliases", "dir/.ssh", "", "..", "."])
def test_hidden_or_empty_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(CommandError):
        _target_path(tmp_path, name)


def test_an_explicit_output_file_wins(tmp_path: Path) -> None:
    assert _target_path(tmp_path / "chosen.bin", "whatever.txt") == tmp_path / "chosen.bin"
