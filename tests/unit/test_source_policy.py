"""The loading guard for a server on a lab network: folders only under the configured roots, one message for every
other path (so nobody can map the server's folders), symlinks and '..' resolved first, hub loading switchable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from headscope.errors import ModelLoadError
from headscope.loading import EMBEDDED, SourcePolicy, resolve_source


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "models"
    good = _model_folder(root / "llama")
    (root / "empty").mkdir()
    outside = _model_folder(tmp_path / "private" / "secret-model")
    (root / "escape").symlink_to(outside)
    (tmp_path / "private" / "notes.txt").write_text("x")
    return {"root": root, "good": good, "outside": outside, "tmp": tmp_path}


def _message(source: str, policy: SourcePolicy) -> str:
    with pytest.raises(ModelLoadError) as caught:
        resolve_source(source, policy)
    return str(caught.value)


def test_a_folder_under_a_root_loads(layout):
    policy = SourcePolicy(roots=(os.path.realpath(layout["root"]),))
    resolved = resolve_source(str(layout["good"]), policy)
    assert resolved.kind == "local"
    assert resolved.location == os.path.realpath(layout["good"])


def test_every_path_outside_the_roots_gets_one_and_the_same_message(layout):
    policy = SourcePolicy(roots=(os.path.realpath(layout["root"]),))
    tmp = layout["tmp"]
    probes = [
        "/etc/passwd",  # an existing file
        "/root/.ssh",  # an existing (or unreadable) folder
        "/no/such/folder/anywhere",  # nothing there
        str(layout["outside"]),  # a real model outside the roots
        str(tmp / "private" / "notes.txt"),
        str(layout["root"] / ".." / "private" / "secret-model"),  # '..' climbing out
        str(layout["root"] / "escape"),  # a symlink inside the root pointing outside
        f"{layout['root']}-sibling",  # a name that merely starts like the root
        "~",
        "./relative/folder",
        "not a hub id at all",
    ]
    messages = {_message(probe, policy) for probe in probes}
    assert len(messages) == 1, messages
    message = messages.pop()
    assert "does not exist" not in message and "holds no" not in message
    assert "passwd" not in message and "secret" not in message


def test_inside_a_root_the_usual_messages_help(layout):
    policy = SourcePolicy(roots=(os.path.realpath(layout["root"]),))
    assert "holds no transformers model" in _message(str(layout["root"] / "empty"), policy)
    assert "does not exist" in _message(str(layout["root"] / "missing"), policy)


def test_no_roots_on_a_network_means_no_local_folders(layout):
    policy = SourcePolicy(roots=())
    message = _message(str(layout["good"]), policy)
    assert "cannot be loaded on this server" in message
    assert _message("/etc", policy) == message


def test_hub_ids_are_not_looked_up_on_disk_under_roots(layout, monkeypatch):
    monkeypatch.chdir(layout["tmp"])
    os.makedirs("owner/name")  # a relative folder that looks like a hub id
    policy = SourcePolicy(roots=(os.path.realpath(layout["root"]),))
    assert resolve_source("owner/name", policy).kind == "hub"


def test_hub_loading_can_be_switched_off(layout):
    policy = SourcePolicy(roots=None, allow_hub=False)
    assert "switched off" in _message("meta-llama/Llama-2-7b-hf", policy)
    assert resolve_source(str(layout["good"]), policy).kind == "local"  # folders still load
    assert resolve_source("embedded", policy).kind == EMBEDDED


def test_policy_from_the_environment(layout, monkeypatch):
    other = layout["tmp"] / "other"
    other.mkdir()
    monkeypatch.setenv("HEADSCOPE_MODEL_DIRS", os.pathsep.join([str(layout["root"]), str(other), ""]))
    monkeypatch.setenv("HEADSCOPE_ALLOW_HUB", "0")
    network = SourcePolicy.from_env(network=True)
    assert network.roots == (os.path.realpath(layout["root"]), os.path.realpath(other))
    assert not network.allow_hub
    local = SourcePolicy.from_env(network=False)
    assert local.roots is None  # on localhost every folder is the user's own
    monkeypatch.delenv("HEADSCOPE_ALLOW_HUB")
    assert SourcePolicy.from_env().allow_hub


def test_a_nul_character_is_refused_not_crashed_on(layout):
    for policy in (SourcePolicy(), SourcePolicy(roots=(str(layout["root"]),))):
        assert "NUL" in _message("/tmp/\x00x", policy)
