"""Where the client's password comes from: a file, the environment, a
prompt without echo; the command line only with a warning."""

from types import SimpleNamespace

import pytest

from spchat.client.passwords import COMMAND_LINE_WARNING, PasswordError, choose_password


def args(password=None, password_file=None, ask_password=False, register=False):
    return SimpleNamespace(password=password, password_file=password_file,
                           ask_password=ask_password, register=register)


def prompts(*answers):
    asked = []

    def ask(prompt):
        asked.append(prompt)
        return answers[len(asked) - 1]
    return ask, asked


def test_the_command_line_works_with_a_warning():
    warned = []
    assert choose_password(args("s3cret pass"), {}, warn=warned.append) == "s3cret pass"
    assert warned == [COMMAND_LINE_WARNING]


def test_a_password_file_gives_its_first_line(tmp_path):
    path = tmp_path / "pw"
    path.write_text("long secret\r\nnot this\n", encoding="utf-8")
    assert choose_password(args(password_file=str(path)), {}) == "long secret"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(PasswordError, match="its first line is empty"):
        choose_password(args(password_file=str(path)), {})
    with pytest.raises(PasswordError, match="No such file"):
        choose_password(args(password_file=str(tmp_path / "none")), {})


def test_the_environment_is_used_when_nothing_else_is_said():
    assert choose_password(args(), {"SPCHAT_PASSWORD": "from env"}) == "from env"
    assert choose_password(args(), {"SPCHAT_PASSWORD": ""}) is None
    assert choose_password(args(), {}) is None  # a guest


def test_asked_without_echo_and_twice_to_register():
    ask, asked = prompts("typed secret")
    assert choose_password(args(ask_password=True), {"SPCHAT_PASSWORD": "x"}, ask) == "typed secret"
    ask, asked = prompts("typed secret", "typed secret")
    assert choose_password(args(register=True), {}, ask) == "typed secret"
    assert asked == ["password: ", "the same password again: "]
    ask, _ = prompts("typed secret", "typo")
    with pytest.raises(PasswordError, match="differ"):
        choose_password(args(register=True), {}, ask)
    ask, _ = prompts("")
    with pytest.raises(PasswordError, match="no password typed"):
        choose_password(args(ask_password=True), {}, ask)


def test_without_a_terminal_a_prompt_is_refused_in_words():
    with pytest.raises(PasswordError, match="without a terminal; use --password-file"):
        choose_password(args(register=True), {}, ask=None)
    # The environment's password registers without asking.
    assert choose_password(args(register=True), {"SPCHAT_PASSWORD": "env pw"}) == "env pw"


def test_the_window_leaves_asking_to_its_masked_field():
    assert choose_password(args(register=True), {}, ask=None, form=True) is None
    assert choose_password(args(register=True), {"SPCHAT_PASSWORD": "e"}, form=True) == "e"
