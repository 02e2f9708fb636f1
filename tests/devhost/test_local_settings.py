"""local.settings.json: its values become the host's environment; a file other users can
read is called out, since the app may run code as another user (scoring workers)."""

from __future__ import annotations

import json
import logging
import os

from devhost.config import load_local_settings


def test_settings_readable_by_others_are_called_out(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("LOCAL_SETTING_SEEN", raising=False)
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {"LOCAL_SETTING_SEEN": "1"}}))
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="devhost"):
        assert load_local_settings(path) == {"LOCAL_SETTING_SEEN": "1"}
    assert "readable by other users (mode 644)" in caplog.text
    assert os.environ["LOCAL_SETTING_SEEN"] == "1"
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="devhost"):
        load_local_settings(path)
    assert caplog.text == ""
