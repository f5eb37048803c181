"""Settings: sources, precedence, validation, warnings and .env.example."""

import dataclasses
import itertools
import os
import sys
from pathlib import Path

import pytest

from spchat import config
from spchat.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path, options=None, environ=None, dotenv=None):
    """load_config with a private .env in tmp_path (written if dotenv given)."""
    path = tmp_path / ".env"
    if dotenv is not None:
        path.write_text(dotenv, encoding="utf-8")
    return load_config(options=options, environ={} if environ is None else environ,
                       dotenv_path=path)


def error_of(tmp_path, **sources):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **sources)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    return message


# ---------------------------------------------------------------- defaults


def test_defaults(tmp_path):
    cfg, warnings = load(tmp_path)
    assert cfg == Config()
    assert warnings == []
    assert cfg.server_host == "0.0.0.0"
    assert cfg.client_host == "127.0.0.1"
    assert cfg.tcp_port == 5000 and cfg.udp_port == 5001
    assert cfg.idle_timeout == 120.0 and isinstance(cfg.idle_timeout, float)
    assert cfg.reconnect_delay == 3.0 and isinstance(cfg.reconnect_delay, float)
    assert cfg.max_retries == 3
    assert cfg.data_dir == Path("./spchat-data") and isinstance(cfg.data_dir, Path)
    assert not cfg.data_dir.is_absolute()
    assert cfg.max_message_bytes == 8192
    assert cfg.handshake_timeout == 10.0
    assert cfg.max_connections_per_ip == 20
    assert (cfg.max_connections, cfg.login_reserve, cfg.p2p_max_per_ip) == (0, 32, 4)
    assert cfg.resume_grace == 30.0 and cfg.presence_interval == 2.0 and cfg.idle_after == 30.0
    assert (cfg.flood_burst, cfg.flood_rate, cfg.flood_queue) == (10, 5.0, 20)
    assert cfg.send_buffer_bytes == 1 << 20
    assert (cfg.history_on_join, cfg.history_days) == (50, 0.0)
    assert (cfg.max_waiting_directs, cfg.max_waiting_from_one) == (100, 25)
    assert cfg.bus_ca is None
    assert (cfg.store_writer, cfg.store_sync, cfg.login_failures) == ("thread", "full", 5)
    assert cfg.commit_interval == 0.005 and cfg.database == "" and cfg.bus == ""
    assert (cfg.max_share_bytes, cfg.relay_port, cfg.relay_max_bps) == (4 << 30, 5002, 10 << 20)
    assert (cfg.p2p_port, cfg.p2p_direct, cfg.download_dir) == (0, True, None)
    assert cfg.p2p_upload_bps == 0 and cfg.relay_host == ""


def test_a_relay_host_is_a_name_or_an_address(tmp_path):
    for host in ("relay.example.org", "203.0.113.5", "2001:db8::5"):
        cfg, _ = load(tmp_path, environ={"CHAT_RELAY_HOST": host})
        assert cfg.relay_host == host
    assert load(tmp_path, options={"relay-host": " chat.example "})[0].relay_host == "chat.example"


def test_a_relay_host_with_a_port_is_refused_plainly(tmp_path):
    """The port is CHAT_RELAY_PORT's: a host:port would be dialled as a
    host name, and every relay across nodes would fail."""
    for host in ("relay.example.org:5002", "203.0.113.5:5002", ":::"):
        assert "CHAT_RELAY_PORT" in error_of(tmp_path, environ={"CHAT_RELAY_HOST": host})


def test_a_bus_url_may_carry_a_password_and_a_user(tmp_path):
    for url in ("redis://:s3cret@bus:6379/0", "redis://chat:s3cret@bus/1",
                "rediss://:s3cret@bus.example:6380/0"):
        assert load(tmp_path, environ={"CHAT_BUS_URL": url})[0].bus == url


def test_a_bad_url_is_not_told_with_its_password(tmp_path):
    """An error is printed, and logged by whatever runs the server: the
    value it shows hides a password."""
    for name, url, shown in (
            ("CHAT_BUS_URL", "redis://chat:s3cr%40t@bus:99999/0", "redis://chat:***@bus:99999/0"),
            ("CHAT_BUS_URL", "rediss://:s3cret@bus/x", "rediss://:***@bus/x"),
            ("CHAT_DATABASE_URL", "postgresql://chat:s3cret@db:0/chat",
             "postgresql://chat:***@db:0/chat")):
        error = error_of(tmp_path, environ={name: url})
        assert "s3cr" not in error
        assert error.startswith(f"invalid {name}={shown!r}: ")


def test_a_database_url_is_kept_as_given(tmp_path):
    url = "postgresql://chat:secret@db.example:5433/spchat?sslmode=require"
    cfg, _ = load(tmp_path, environ={"CHAT_DATABASE_URL": url})
    assert cfg.database == url
    cfg, _ = load(tmp_path, options={"database": "postgres://db/chat"})
    assert cfg.database == "postgres://db/chat"


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tcp_port = 1


def test_table_and_dataclass_agree():
    assert [f.name for f in dataclasses.fields(Config)] == [s.field for s in config.SETTINGS]
    for s in config.SETTINGS:
        assert getattr(Config(), s.field) == s.parse(s.default)
        assert s.env.startswith("CHAT_")


def test_missing_dotenv_and_no_dotenv_are_fine(tmp_path):
    assert load_config(environ={}, dotenv_path=tmp_path / "absent")[0] == Config()
    assert load_config(environ={}, dotenv_path=None)[0] == Config()


def test_environ_defaults_to_os_environ(tmp_path, monkeypatch):
    # monkeypatch undoes the change: os.environ is left as it was
    monkeypatch.setenv("CHAT_TCP_PORT", "6123")
    cfg, _ = load_config(dotenv_path=tmp_path / "absent")
    assert cfg.tcp_port == 6123


# ------------------------------------------------------------ each source


ALL_OPTIONS = {
    "host": "10.0.0.1",
    "tcp-port": "6000",
    "udp-port": "6001",
    "idle-timeout": "2.5",
    "data-dir": "/srv/chat",
    "max-message-bytes": "100",
    "handshake-timeout": "4",
    "max-connections-per-ip": "2",
}
EXPECTED_FROM_OPTIONS = dict(
    server_host="10.0.0.1",
    tcp_port=6000,
    udp_port=6001,
    idle_timeout=2.5,
    data_dir=Path("/srv/chat"),
    max_message_bytes=100,
    handshake_timeout=4.0,
    max_connections_per_ip=2,
)
ALL_ENV = {
    "CHAT_SERVER_HOST": "::",
    "CHAT_CLIENT_HOST": "chat.example.org",
    "CHAT_TCP_PORT": "7000",
    "CHAT_UDP_PORT": "7001",
    "CHAT_IDLE_TIMEOUT": "30",
    "CHAT_RECONNECT_DELAY": "0",
    "CHAT_MAX_RETRIES": "0",
    "CHAT_DATA_DIR": "data/here",
    "CHAT_MAX_MESSAGE_BYTES": "32000",
    "CHAT_HANDSHAKE_TIMEOUT": "0.5",
    "CHAT_MAX_CONNECTIONS_PER_IP": "1",
}
EXPECTED_FROM_ENV = Config(
    server_host="::",
    client_host="chat.example.org",
    tcp_port=7000,
    udp_port=7001,
    idle_timeout=30.0,
    reconnect_delay=0.0,
    max_retries=0,
    data_dir=Path("data/here"),
    max_message_bytes=32000,
    handshake_timeout=0.5,
    max_connections_per_ip=1,
)


def test_options_alone(tmp_path):
    cfg, warnings = load(tmp_path, options=ALL_OPTIONS)
    assert cfg == Config(**EXPECTED_FROM_OPTIONS)
    assert warnings == []


def test_options_not_given_are_none_and_unknown_keys_ignored(tmp_path):
    options = {row[0]: None for row in config.options_table()}
    options["some-flag"] = 1  # twistd puts flags in the same dict
    assert load(tmp_path, options=options)[0] == Config()


def test_environment_alone(tmp_path):
    cfg, warnings = load(tmp_path, environ=ALL_ENV)
    assert cfg == EXPECTED_FROM_ENV
    assert warnings == []


def test_dotenv_alone(tmp_path):
    text = "".join(f"{k}={v}\n" for k, v in ALL_ENV.items())
    cfg, warnings = load(tmp_path, dotenv="# comment\n" + text)
    assert cfg == EXPECTED_FROM_ENV
    assert warnings == []


def test_dotenv_quoting_and_export(tmp_path):
    cfg, _ = load(tmp_path, dotenv='export CHAT_TCP_PORT=6500\nCHAT_DATA_DIR="my data"\n')
    assert cfg.tcp_port == 6500
    assert cfg.data_dir == Path("my data")


def test_load_config_does_not_touch_os_environ(tmp_path):
    before = dict(os.environ)
    load(tmp_path, dotenv="CHAT_TCP_PORT=6500\nCHAT_SOMETHING_NEW=1\n")
    assert dict(os.environ) == before


def test_port_zero_means_any_free_port(tmp_path):
    cfg, _ = load(tmp_path, options={"tcp-port": "0", "udp-port": "0"})
    assert cfg.tcp_port == 0 and cfg.udp_port == 0


# -------------------------------------------------------------- precedence

# (field, option, env name, values for option / environment / .env, parsed)
PRECEDENCE_CASES = [
    ("tcp_port", "tcp-port", "CHAT_TCP_PORT", ("6001", "6002", "6003"), int),
    ("udp_port", "udp-port", "CHAT_UDP_PORT", ("7001", "7002", "7003"), int),
    ("data_dir", "data-dir", "CHAT_DATA_DIR", ("opt/dir", "env/dir", "file/dir"), Path),
    ("server_host", "host", "CHAT_SERVER_HOST", ("10.0.0.1", "10.0.0.2", "10.0.0.3"), str),
    ("idle_timeout", "idle-timeout", "CHAT_IDLE_TIMEOUT", ("1", "2", "3"), float),
]


@pytest.mark.parametrize("field, option, env, values, convert", PRECEDENCE_CASES)
@pytest.mark.parametrize(
    "present",
    # every combination of sources, including all three and none
    [combo for n in range(4) for combo in itertools.combinations(("option", "env", "dotenv"), n)],
)
def test_precedence(tmp_path, field, option, env, values, convert, present):
    opt_value, env_value, file_value = values
    options = {option: opt_value} if "option" in present else {option: None}
    environ = {env: env_value} if "env" in present else {}
    dotenv = f"{env}={file_value}\n" if "dotenv" in present else ""
    cfg, _ = load(tmp_path, options=options, environ=environ, dotenv=dotenv)
    if "option" in present:
        expected = convert(opt_value)
    elif "env" in present:
        expected = convert(env_value)
    elif "dotenv" in present:
        expected = convert(file_value)
    else:
        expected = getattr(Config(), field)
    assert getattr(cfg, field) == expected


def test_empty_values_count_as_unset(tmp_path):
    cfg, _ = load(tmp_path, environ={"CHAT_TCP_PORT": ""}, dotenv="CHAT_TCP_PORT=6003\n")
    assert cfg.tcp_port == 6003
    cfg, _ = load(tmp_path, environ={"CHAT_TCP_PORT": ""}, dotenv="CHAT_TCP_PORT=\n")
    assert cfg.tcp_port == 5000
    cfg, _ = load(tmp_path, dotenv="CHAT_TCP_PORT\nCHAT_DATA_DIR=''\n")
    assert cfg == Config()


def test_empty_option_is_an_error_not_unset(tmp_path):
    message = error_of(tmp_path, options={"tcp-port": ""}, environ={"CHAT_TCP_PORT": "6002"})
    assert message == "invalid --tcp-port='': not an integer"


# -------------------------------------------------------------- validation

BAD_VALUES = [
    # (env name, option name or None, value, reason fragment)
    ("CHAT_TCP_PORT", "tcp-port", "abc", "not an integer"),
    ("CHAT_TCP_PORT", "tcp-port", "70000", "port must be"),
    ("CHAT_TCP_PORT", "tcp-port", "65536", "port must be"),
    ("CHAT_TCP_PORT", "tcp-port", "-1", "port must be"),
    ("CHAT_TCP_PORT", "tcp-port", "5.5", "not an integer"),
    ("CHAT_TCP_PORT", "tcp-port", "1_000", "not an integer"),
    ("CHAT_UDP_PORT", "udp-port", "abc", "not an integer"),
    ("CHAT_UDP_PORT", "udp-port", "99999", "port must be"),
    ("CHAT_IDLE_TIMEOUT", "idle-timeout", "-1", "0 or more"),
    ("CHAT_PRESENCE_INTERVAL", "presence-interval", "0", "more than 0"),
    ("CHAT_FLOOD_RATE", "flood-rate", "-2", "more than 0"),
    ("CHAT_FLOOD_BURST", "flood-burst", "0", "at least 1"),
    ("CHAT_SEND_BUFFER_BYTES", "send-buffer-bytes", "1000", "at least 65536"),
    ("CHAT_RESUME_GRACE", "resume-grace", "-1", "0 or more"),
    ("CHAT_STORE_WRITER", "store-writer", "fork", "one of thread, inline"),
    ("CHAT_STORE_SYNC", "store-sync", "off", "one of full, normal"),
    ("CHAT_DATABASE_URL", "database", "mysql://db/chat", "postgresql://"),
    ("CHAT_DATABASE_URL", "database", "/var/lib/chat.db", "postgresql://"),
    ("CHAT_DATABASE_URL", "database", "postgresql://db:port/chat", "port must be"),
    ("CHAT_DATABASE_URL", "database", "postgresql://db:99999/chat", "port must be"),
    ("CHAT_DATABASE_URL", "database", "postgresql://db:5432", "names no database"),
    ("CHAT_BUS_URL", "bus", "http://bus:6379", "redis://"),
    ("CHAT_BUS_URL", "bus", "redis://bus:port", "port must be"),
    ("CHAT_BUS_URL", "bus", "redis://bus:6379/zero", "database must be a number"),
    ("CHAT_BUS_URL", "bus", "redis://chat@bus:6379", "needs its password too"),
    ("CHAT_NODE", "node", "two words", "without spaces"),
    ("CHAT_NODE", "node", "n" * 65, "at most 64"),
    ("CHAT_COMMIT_INTERVAL", "commit-interval", "2", "at most 1 s"),
    ("CHAT_COMMIT_INTERVAL", "commit-interval", "-0.001", "0 or more"),
    ("CHAT_HISTORY_ON_JOIN", "history-on-join", "500", "0-200"),
    ("CHAT_MAX_WAITING_DIRECTS", "max-waiting-directs", "-1", "0-10000"),
    ("CHAT_IDLE_TIMEOUT", "idle-timeout", "soon", "not a number"),
    ("CHAT_IDLE_TIMEOUT", "idle-timeout", "nan", "finite"),
    ("CHAT_IDLE_TIMEOUT", "idle-timeout", "inf", "finite"),
    ("CHAT_IDLE_TIMEOUT", "idle-timeout", "1e999", "finite"),
    ("CHAT_HANDSHAKE_TIMEOUT", "handshake-timeout", "-0.5", "more than 0"),
    ("CHAT_HANDSHAKE_TIMEOUT", "handshake-timeout", "NaN", "finite"),
    ("CHAT_HANDSHAKE_TIMEOUT", "handshake-timeout", "ten", "not a number"),
    ("CHAT_RECONNECT_DELAY", None, "-3", "0 or more"),
    ("CHAT_RECONNECT_DELAY", None, "nan", "finite"),
    ("CHAT_MAX_RETRIES", None, "-1", "at least 0"),
    ("CHAT_MAX_RETRIES", None, "2.0", "not an integer"),
    ("CHAT_MAX_MESSAGE_BYTES", "max-message-bytes", "0", "1-32000"),
    ("CHAT_MAX_MESSAGE_BYTES", "max-message-bytes", "32001", "1-32000"),
    ("CHAT_MAX_MESSAGE_BYTES", "max-message-bytes", "65535", "1-32000"),
    ("CHAT_MAX_MESSAGE_BYTES", "max-message-bytes", "big", "not an integer"),
    ("CHAT_MAX_CONNECTIONS_PER_IP", "max-connections-per-ip", "0", "at least 1"),
    ("CHAT_MAX_CONNECTIONS", "max-connections", "-1", "at least 0"),
    ("CHAT_LOGIN_RESERVE", "login-reserve", "x", "not an integer"),
    ("CHAT_P2P_MAX_PER_IP", None, "0", "at least 1"),
    ("CHAT_SERVER_HOST", "host", "   ", "must not be empty"),
    ("CHAT_SERVER_HOST", "host", "local host", "whitespace"),
    ("CHAT_CLIENT_HOST", None, " \t", "must not be empty"),
    ("CHAT_CLIENT_HOST", None, "a\nb", "whitespace"),
    ("CHAT_MAX_SHARE_BYTES", "max-share-bytes", "-1", "must be 0-"),
    ("CHAT_RELAY_PORT", "relay-port", "65536", "port must be"),
    ("CHAT_RELAY_MAX_BPS", "relay-max-bps", "fast", "not an integer"),
    ("CHAT_RELAY_HOST", "relay-host", "relay.example:5002/x", "host name or an IP address"),
    ("CHAT_MAX_WAITING_FROM_ONE", "max-waiting-from-one", "0", "1-10000"),
    ("CHAT_RELAY_HOST", "relay-host", "relay example", "host name or an IP address"),
    ("CHAT_P2P_PORT", None, "-5", "port must be"),
    ("CHAT_P2P_DIRECT", None, "maybe", "yes or no"),
    ("CHAT_DOWNLOAD_DIR", None, "a\0b", "NUL"),
    ("CHAT_P2P_UPLOAD_BPS", None, "1e6", "not an integer"),
]


@pytest.mark.parametrize("env, option, value, reason", BAD_VALUES)
def test_invalid_environment_value(tmp_path, env, option, value, reason):
    message = error_of(tmp_path, environ={env: value})
    assert message.startswith(f"invalid {env}={value!r}: ")
    assert reason in message


@pytest.mark.parametrize(
    "env, option, value, reason", [case for case in BAD_VALUES if case[1] is not None]
)
def test_invalid_option_value_names_the_option(tmp_path, env, option, value, reason):
    # a valid environment value must not hide the bad option, nor be blamed
    message = error_of(tmp_path, options={option: value}, environ={env: "1"})
    assert message.startswith(f"invalid --{option}={value!r}: ")
    assert reason in message
    assert env not in message


def test_invalid_dotenv_value_names_the_file(tmp_path):
    message = error_of(tmp_path, dotenv="CHAT_TCP_PORT=abc\n")
    assert message == f"invalid CHAT_TCP_PORT='abc' (in {tmp_path / '.env'}): not an integer"


def test_error_examples_and_attributes(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, environ={"CHAT_TCP_PORT": "abc"})
    assert str(info.value) == "invalid CHAT_TCP_PORT='abc': not an integer"
    assert (info.value.name, info.value.value) == ("CHAT_TCP_PORT", "abc")
    assert isinstance(info.value, ValueError)
    assert error_of(tmp_path, options={"tcp-port": "70000"}) == (
        "invalid --tcp-port='70000': port must be 1-65535, or 0 for any free port"
    )


def test_valid_edge_values(tmp_path):
    cfg, _ = load(tmp_path, environ={
        "CHAT_TCP_PORT": "65535",
        "CHAT_UDP_PORT": " 1 ",
        "CHAT_IDLE_TIMEOUT": "1e-3",
        "CHAT_RECONNECT_DELAY": "0.0",
        "CHAT_MAX_MESSAGE_BYTES": "1",
        "CHAT_HANDSHAKE_TIMEOUT": ".25",
    })
    assert (cfg.tcp_port, cfg.udp_port) == (65535, 1)
    assert cfg.idle_timeout == 0.001 and cfg.reconnect_delay == 0.0
    assert cfg.max_message_bytes == 1 and cfg.handshake_timeout == 0.25
    cfg, _ = load(tmp_path, environ={"CHAT_P2P_DIRECT": " No ", "CHAT_MAX_SHARE_BYTES": "0",
                                     "CHAT_RELAY_MAX_BPS": "0"})
    assert (cfg.p2p_direct, cfg.max_share_bytes, cfg.relay_max_bps) == (False, 0, 0)


def test_unreadable_dotenv_is_an_error_naming_the_file(tmp_path):
    (tmp_path / ".env").mkdir()
    message = error_of(tmp_path)
    assert message.startswith(f"cannot read .env file {str(tmp_path / '.env')!r}")


def test_undecodable_dotenv_is_an_error_naming_the_file(tmp_path):
    (tmp_path / ".env").write_bytes(b"CHAT_TCP_PORT=\xff\xfe\n")
    message = error_of(tmp_path)
    assert message.startswith(f"cannot read .env file {str(tmp_path / '.env')!r}")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything")
def test_permission_denied_dotenv_is_an_error(tmp_path):
    path = tmp_path / ".env"
    path.write_text("CHAT_TCP_PORT=1\n")
    path.chmod(0)
    try:
        assert "cannot read .env file" in error_of(tmp_path)
    finally:
        path.chmod(0o600)


# ---------------------------------------------------------------- warnings


@pytest.mark.parametrize("name", ["CHAT_SECRET_KEY", "CHAT_IV"])
def test_obsolete_key_in_environment_warns(tmp_path, name):
    cfg, warnings = load(tmp_path, environ={name: "c2VjcmV0"})
    assert cfg == Config()
    assert warnings == [
        f"{name} is ignored: encryption keys are now negotiated per session "
        "(Noise handshake); remove it from the environment"
    ]


def test_obsolete_keys_in_dotenv_warn_and_name_the_file(tmp_path):
    _, warnings = load(tmp_path, dotenv="CHAT_SECRET_KEY=abc\nCHAT_IV=def\n")
    assert len(warnings) == 2
    assert warnings[0].startswith("CHAT_SECRET_KEY is ignored: ")
    assert warnings[1].startswith("CHAT_IV is ignored: ")
    assert all(w.endswith(f"remove it from {tmp_path / '.env'}") for w in warnings)
    assert all("\n" not in w for w in warnings)


def test_obsolete_key_in_both_places_warns_once(tmp_path):
    _, warnings = load(tmp_path, environ={"CHAT_IV": "x"}, dotenv="CHAT_IV=y\n")
    assert warnings == [
        "CHAT_IV is ignored: encryption keys are now negotiated per session "
        f"(Noise handshake); remove it from the environment and {tmp_path / '.env'}"
    ]


def test_empty_obsolete_key_does_not_warn(tmp_path):
    _, warnings = load(tmp_path, environ={"CHAT_SECRET_KEY": ""}, dotenv="CHAT_IV=\n")
    assert warnings == []


def test_misspelt_setting_in_dotenv_warns(tmp_path):
    _, warnings = load(tmp_path, dotenv="CHAT_TCP_PROT=6000\nOTHER_TOOL=1\n")
    assert warnings == [f"CHAT_TCP_PROT in {tmp_path / '.env'} is not an spchat setting (misspelt?)"]


# ------------------------------------------------------ options and example


def test_options_table_rows():
    rows = config.options_table()
    assert [row[0] for row in rows] == [
        "host", "tcp-port", "udp-port", "listen", "irc", "ircs", "irc-cert", "irc-key", "irc-operator",
        "irc-server-name", "metrics", "idle-timeout", "data-dir",
        "max-message-bytes", "handshake-timeout", "max-connections-per-ip",
        "max-connections", "login-reserve", "resume-grace", "presence-interval", "idle-after",
        "flood-burst", "flood-rate", "flood-queue", "refusal-log-seconds", "send-buffer-bytes", "history-on-join",
        "max-waiting-directs", "max-waiting-from-one", "history-days", "default-rooms",
        "store", "database", "bus", "bus-ca", "node", "node-timeout", "store-writer", "store-sync", "commit-interval", "login-failures",
        "registrations-per-hour", "registrations-per-hour-total", "offline-retention",
        "max-share-bytes", "relay-port", "relay-host", "relay-max-bps", "relay-max-per-ip", "relay-idle-timeout",
    ]
    for row in rows:
        long, short, default, help_text = row
        assert short is None and default is None
        setting = next(s for s in config.SETTINGS if s.option == long)
        assert setting.env in help_text and setting.default in help_text


def test_options_table_works_with_twisted_usage():
    from twisted.python import usage

    class Options(usage.Options):
        optParameters = config.options_table()

    options = Options()
    options.parseOptions(["--tcp-port", "0", "--data-dir=/tmp/x"])
    assert options["tcp-port"] == "0" and options["host"] is None
    cfg, _ = load_config(options=dict(options), environ={}, dotenv_path=None)
    assert cfg.tcp_port == 0 and cfg.data_dir == Path("/tmp/x")
    assert cfg.server_host == "0.0.0.0"


def test_env_example_file_matches_generator():
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert text == config.env_example_text(), (
        "regenerate with: python -m spchat.config > .env.example"
    )


def test_env_example_lists_every_setting_with_its_default():
    lines = config.env_example_text().splitlines()
    for s in config.SETTINGS:
        index = lines.index(f"{s.env}={s.default}")
        assert lines[index - 1].startswith("# ")
    assert "CHAT_SECRET_KEY" in config.env_example_text()
    assert "CHAT_IV" in config.env_example_text()


def test_env_example_loads_as_the_defaults(tmp_path):
    (tmp_path / ".env").write_text(config.env_example_text(), encoding="utf-8")
    cfg, warnings = load_config(environ={}, dotenv_path=tmp_path / ".env")
    assert cfg == Config()
    assert warnings == []


# ------------------------------------------------------------ client dir


@pytest.mark.skipif(sys.platform == "win32", reason="uses %APPDATA% on Windows")
def test_client_config_dir(tmp_path):
    assert config.client_config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "spchat"
    assert config.client_config_dir({"XDG_CONFIG_HOME": "relative"}) == (
        Path.home() / ".config" / "spchat"
    )
    assert config.client_config_dir({}) == Path.home() / ".config" / "spchat"
    chosen = {"SPCHAT_CONFIG_DIR": str(tmp_path / "mine"), "XDG_CONFIG_HOME": str(tmp_path)}
    assert config.client_config_dir(chosen) == tmp_path / "mine"


def test_data_dir_expands_home(tmp_path):
    cfg, _ = config.load_config(environ={"CHAT_DATA_DIR": "~/chat"}, dotenv_path=None)
    assert cfg.data_dir == Path.home() / "chat"


def test_default_rooms_are_room_names_in_their_display_form():
    cfg, _ = config.load_config(options={}, environ={"CHAT_DEFAULT_ROOMS": "lobby, Dev,dev"},
                                dotenv_path=Path("/nonexistent/.env"))
    assert cfg.default_rooms == ("lobby", "Dev")  # one room, however it is written
    with pytest.raises(config.ConfigError, match="CHAT_DEFAULT_ROOMS.*a room name"):
        config.load_config(options={}, environ={"CHAT_DEFAULT_ROOMS": "lobby,two words"},
                           dotenv_path=Path("/nonexistent/.env"))


def test_no_default_rooms_is_allowed():
    cfg, _ = config.load_config(options={}, environ={"CHAT_DEFAULT_ROOMS": " "},
                                dotenv_path=Path("/nonexistent/.env"))
    assert cfg.default_rooms == ()
