"""The desktop client's connect form and trust questions (no display needed)."""

import json

import pytest

from spchat.client.connect import (ConnectForm, check_form, load_last, save_last,
                                   trust_question)
from spchat.client.pins import PinMismatch, PinStore, UnknownServer

FP1 = "SHA256:" + "1" * 43
FP2 = "SHA256:" + "2" * 43


def test_a_good_form():
    assert check_form(" chat.example ", "5000", " ann ", "", False) == ConnectForm(
        "chat.example", 5000, "ann", None, False)
    assert check_form("h", "1", "ann", "pw", True) == ConnectForm("h", 1, "ann", "pw", True)


@pytest.mark.parametrize("host, port, name, password, register, problem", [
    ("", "5000", "ann", "", False, "enter the server's address"),
    ("my host", "5000", "ann", "", False, "the server address 'my host' has spaces in it"),
    ("h", "50x", "ann", "", False, "the port must be a number, not '50x'"),
    ("h", "", "ann", "", False, "the port must be a number, not ''"),
    ("h", "0", "ann", "", False, "the port must be 1-65535, not 0"),
    ("h", "65536", "ann", "", False, "the port must be 1-65535, not 65536"),
    ("h", "5000", "  ", "", False, "enter the name to chat under"),
    ("h", "5000", "ann", "", True, "to register the name, enter a password for it"),
])
def test_a_bad_form_says_what_to_fix(host, port, name, password, register, problem):
    with pytest.raises(ValueError) as e:
        check_form(host, port, name, password, register)
    assert str(e.value) == problem


def test_last_values_are_remembered_without_the_password(tmp_path):
    assert load_last(tmp_path / "none") == {}
    save_last(tmp_path / "cfg", ConnectForm("h", 6000, "ann", "secret", True))
    saved = (tmp_path / "cfg" / "desktop.json").read_text()
    assert "secret" not in saved
    assert load_last(tmp_path / "cfg") == {"host": "h", "port": "6000", "name": "ann"}
    assert list((tmp_path / "cfg").iterdir()) == [tmp_path / "cfg" / "desktop.json"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"host": ["x"]}), ""])
def test_a_damaged_memory_falls_back_to_defaults(tmp_path, content):
    (tmp_path / "desktop.json").write_text(content)
    assert load_last(tmp_path) == {}


def test_unknown_server_is_asked_about_and_trusted_exactly(tmp_path):
    pins = PinStore(tmp_path)
    with pytest.raises(UnknownServer) as e:
        pins.check("h", 1, FP1, accept_new=False)
    assert not pins.path.exists()  # asking pins nothing
    question = trust_question(e.value)
    assert question.can_trust and question.fingerprint == FP1
    assert "not been seen before" in question.text
    pins.trust("h", 1, FP1)
    assert pins.check("h", 1, FP1, accept_new=False) is False  # known now


def test_changed_key_shows_both_fingerprints_and_cannot_be_trusted(tmp_path):
    pins = PinStore(tmp_path)
    pins.trust("h", 1, FP1)
    with pytest.raises(PinMismatch) as e:
        pins.check("h", 1, FP2, accept_new=False)
    question = trust_question(e.value)
    assert not question.can_trust
    assert "CHANGED" in question.title
    assert FP1 in question.text and FP2 in question.text
    assert "--forget-server h:1" in question.text
