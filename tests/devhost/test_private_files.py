"""devhost's key-bearing files: 0600 in a 0700 folder, never through a planted symlink."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from devhost.keys import KeyRing, remove_state, state_file, write_state
from devhost.private_files import PrivateFileError, private_folder, read_private, write_private

KEYS = KeyRing(function_key="f-key", master_key="m-key")


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setenv("DEVHOST_STATE_DIR", str(folder))
    return folder


def mode(path: Path) -> int:
    return path.lstat().st_mode & 0o777


def test_state_is_written_0600_in_a_0700_folder(state_dir: Path):
    path = write_state(7071, url="http://127.0.0.1:7071", keys=KEYS, script_root=Path("/app"))
    assert (mode(state_dir), mode(path)) == (0o700, 0o600)
    assert json.loads(path.read_text())["master_key"] == "m-key"
    assert [p.name for p in state_dir.iterdir()] == ["7071.json"]  # no temporary left
    remove_state(7071)
    assert not path.exists()


def test_an_existing_folder_of_ours_is_narrowed(state_dir: Path):
    state_dir.mkdir(mode=0o755)
    os.chmod(state_dir, 0o755)
    write_state(7071, url="u", keys=KEYS, script_root=Path("/app"))
    assert mode(state_dir) == 0o700


def test_a_symlink_planted_at_the_state_file_is_replaced_not_followed(state_dir: Path,
                                                                      tmp_path: Path):
    private_folder(state_dir)
    target = tmp_path / "elsewhere.json"
    target.write_text("theirs")
    state_file(7071).symlink_to(target)
    with pytest.raises(OSError):
        read_private(state_file(7071))
    path = write_state(7071, url="u", keys=KEYS, script_root=Path("/app"))
    assert target.read_text() == "theirs" and not path.is_symlink() and mode(path) == 0o600


def test_a_symlinked_state_folder_is_refused(state_dir: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state_dir.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(PrivateFileError):
        write_state(7071, url="u", keys=KEYS, script_root=Path("/app"))
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(OSError):
        write_private(state_dir / "x.json", b"{}")


def test_the_system_key_is_stored_or_derived_never_the_master_key():
    document = KEYS.to_secrets()
    assert KeyRing.from_secrets(document) == KEYS
    legacy = {k: v for k, v in document.items() if k != "systemKeys"}
    assert KeyRing.from_secrets(legacy).system_key == KEYS.system_key != KEYS.master_key
    assert KEYS.allows_system(KEYS.system_key) and KEYS.allows_system(KEYS.master_key)
    assert not KEYS.allows_system(KEYS.function_key) and not KEYS.allows_system(None)
    assert not KEYS.allows("function", KEYS.system_key)


def test_azurites_folder_is_private(azurite):
    assert mode(azurite.location) == 0o700
