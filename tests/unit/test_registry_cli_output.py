"""CLI helpers: az-style output (--query, -o) and --set parsing; asset manifests and refs."""

from __future__ import annotations

import click
import pytest
from batchfn.contract.asset_manifest import (
    AssetManifest,
    ManifestFile,
    parse_asset_ref,
    scan_folder,
)
from batchfn.contract.errors import InvalidRequest
from batchfn.devhost_state import local_key

from batchfn.cli.common import parse_sets
from batchfn.output import QueryError, render
from batchfn.target import resolve_target

ROWS = [{"name": "a", "n": 1, "tags": {"x": "y"}, "ok": True},
        {"name": "bb", "n": None, "tags": {}, "ok": False}]


def test_render_formats():
    assert render(ROWS, "tsv") == "a\t1\ttrue\nbb\t\tfalse"
    assert render(ROWS, "tsv", "[].name") == "a\nbb"
    assert render(ROWS[0], "tsv", "name") == "a"
    table = render(ROWS, "table").splitlines()
    assert table[0].split() == ["name", "n", "ok"] and table[2].split() == ["a", "1", "true"]
    assert render(ROWS, "json", "[0].tags") == '{\n  "x": "y"\n}'
    assert render({"a": 1}, "yaml") == "a: 1"
    with pytest.raises(QueryError):
        render(ROWS, "json", "[?")


def test_parse_sets():
    assert parse_sets(["defaults.deployment_name=blue", "settings.mini_batch_size=20",
                       "settings.retry_settings.timeout=1.5", "tags.flag=true",
                       "description="]) == {
        "defaults": {"deployment_name": "blue"},
        "settings": {"mini_batch_size": 20, "retry_settings": {"timeout": 1.5}},
        "tags": {"flag": True}, "description": ""}
    for bad in (["novalue"], ["=x"], ["a..b=1"], ["a=1", "a.b=2"]):
        with pytest.raises(click.BadParameter):
            parse_sets(bad)


def test_target_and_devhost_key(tmp_path, monkeypatch):
    monkeypatch.setenv("DEVHOST_STATE_DIR", str(tmp_path))
    (tmp_path / "7071.json").write_text(
        '{"url": "http://127.0.0.1:7071", "key": "k1", "master_key": "m", "pid": 1, '
        '"script_root": "/app"}')
    assert resolve_target() == ("http://127.0.0.1:7071", "k1")
    assert local_key("https://myapp.azurewebsites.net") is None
    assert local_key("http://127.0.0.1:7072") is None  # no devhost there
    monkeypatch.setenv("BATCHFN_URL", "https://myapp.azurewebsites.net/")
    monkeypatch.setenv("BATCHFN_KEY", "secret")
    assert resolve_target() == ("https://myapp.azurewebsites.net", "secret")


def test_manifest_digest_is_content_addressed(tmp_path):
    one = tmp_path / "a" / "model"
    two = tmp_path / "b" / "model"
    for folder in (one, two):
        (folder / "sub").mkdir(parents=True)
        (folder / "w.bin").write_bytes(b"weights")
        (folder / "sub" / "c.json").write_text("{}")
    assert scan_folder(one).digest == scan_folder(two).digest
    (two / "w.bin").write_bytes(b"other")
    assert scan_folder(one).digest != scan_folder(two).digest
    manifest = scan_folder(one)
    assert AssetManifest.from_dict(manifest.to_dict()) == manifest
    with pytest.raises(InvalidRequest, match="empty"):
        scan_folder(_empty(tmp_path))
    with pytest.raises(InvalidRequest, match="does not exist"):
        scan_folder(tmp_path / "missing")


def _manifest(root, files):
    return AssetManifest.from_dict({"root": root, "files": [
        {"path": path, "size": 1, "sha256": sha * 64, "md5": "0" * 32} for path, sha in files]})


def test_manifest_digest_encoding_is_unambiguous():
    # Under the old "root/path<TAB>sha256<LF>" lines, a path holding "<TAB><sha><LF>" made
    # one file read as two: these folders shared a digest.
    tab = chr(9)
    two_files = {"root": "m", "files": [
        {"path": "a", "size": 1, "sha256": "1" * 64, "md5": "0" * 32},
        {"path": "b", "size": 1, "sha256": "2" * 64, "md5": "0" * 32}]}
    one_file = {"root": "m", "files": [
        {"path": f"a{tab}{'1' * 64}{chr(10)}m/b", "size": 1, "sha256": "2" * 64,
         "md5": "0" * 32}]}
    with pytest.raises(InvalidRequest, match="control characters"):
        AssetManifest.from_dict(one_file)
    # Forged past validation, the encoding still tells the two apart.
    forged = AssetManifest("m", (ManifestFile(one_file["files"][0]["path"], 1, "2" * 64,
                                              "0" * 32),))
    assert forged.digest != AssetManifest.from_dict(two_files).digest
    # Folder name and path boundaries count: "m/a" + "b" is not "m" + "a/b".
    assert _manifest("m", [("a/b", "1")]).digest != _manifest("n", [("a/b", "1")]).digest
    assert _manifest("m", [("a", "1"), ("b", "2")]).digest != \
        _manifest("m", [("a", "2"), ("b", "1")]).digest
    # The order files were listed in does not.
    assert _manifest("m", [("a-c", "1"), ("a/b", "2")]).digest == \
        _manifest("m", [("a/b", "2"), ("a-c", "1")]).digest


@pytest.mark.parametrize("bad", ["a\x01b", "line\nbreak", "tab\tname", "del\x7f", "a\\b"])
def test_asset_paths_refuse_control_characters(tmp_path, bad):
    with pytest.raises(InvalidRequest, match="invalid manifest file path"):
        _manifest("m", [(bad, "1")])
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / bad).write_bytes(b"x")
    with pytest.raises(InvalidRequest, match="file name in"):
        scan_folder(folder)


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(("text", "expected"), [
    ("azureml:clf:3", ("clf", "3")), ("clf:12", ("clf", "12")),
    ("azureml:clf@latest", ("clf", "latest")),
])
def test_asset_refs(text, expected):
    assert parse_asset_ref(text) == expected


@pytest.mark.parametrize("text", ["", "azureml:clf", "azureml:../x:1", "clf:abc", None])
def test_bad_asset_refs(text):
    with pytest.raises(InvalidRequest):
        parse_asset_ref(text)
