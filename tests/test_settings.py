"""Deployment settings (swf/settings.py): one precedence (flag > environment > config file >
default) for every section, upstream's ACTIVEMQ_* variables beside ours, unknown keys refused at
start, and no secret in any repr, message or log line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents.batch.panda import PandaBatch
from agents.ddm.rucio import RucioCatalog
from agents.registry import create_adapter
from agents.transport.broker import BrokerConfig, BrokerConfigError
from swf.settings import ENVIRONMENT, SettingsError, load_settings

REPO = Path(__file__).resolve().parent.parent
SWF = [sys.executable, "-c", "from swf.cli import run; run()"]

# section, key, its environment variable (None: none), then a value for each layer, as typed
# (the environment's is the text that gives it), and the default.
LAYERS = [
    ("store", "url", "SWF_DB", "sqlite:///flag.db", "sqlite:///env.db", "sqlite:///file.db",
     "sqlite:///swf.db"),
    ("broker", "url", "SWF_BROKER", "stomp://flag:1", "stomp://env:2", "stomp://file:3", None),
    ("broker", "user", "SWF_STOMP_USER", "flag-user", "env-user", "file-user", None),
    ("broker", "verify", "SWF_STOMP_VERIFY", True, False, True, True),
    # default None: the data directory beside the store's file (agents/dataroot.py)
    ("agent", "data_dir", "SWF_DATA", Path("flag"), Path("env"), Path("file"), None),
    ("agent", "user", "SWF_USER", "flag_user", "env_user", "file_user", "swf"),
    ("agent", "heartbeat_interval", None, 1.5, None, 2.5, 60.0),
    ("recorder", "name", None, "flag-rec", None, "file-rec", "swf-recorder"),
    ("recorder", "batch_size", None, 7, None, 8, 500),
    ("rucio", "host", "RUCIO_HOST", "http://flag", "http://env", "http://file", None),
    ("rucio", "password_file", "RUCIO_PASSWORD_FILE", "/flag", "/env", "/file", None),
    ("panda", "url", "PANDA_URL", "http://flag/p", "http://env/p", "http://file/p", None),
    ("panda", "url_ssl", "PANDA_URL_SSL", "https://flag/p", "https://env/p", "https://file/p",
     None),
]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, int | float) else f'"{value}"'


def env_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize(("section", "key", "variable", "flag", "env", "file", "default"), LAYERS,
                         ids=[f"{s}.{k}" for s, k, *_ in LAYERS])
def test_flag_beats_environment_beats_file_beats_default(
        tmp_path: Path, section: str, key: str, variable: str | None, flag: Any, env: Any,
        file: Any, default: Any) -> None:
    def value(settings: Any) -> Any:
        return getattr(getattr(settings, section), key)

    config = tmp_path / "swf.toml"
    config.write_text(f"[{section}]\n{key} = {toml_value(file)}\n")
    environ = {variable: env_text(env)} if variable else {}
    assert value(load_settings(environ={})) == default
    assert value(load_settings(config, environ={})) == file
    assert value(load_settings(environ={"SWF_CONFIG": str(config)})) == file
    if variable:
        assert value(load_settings(config, environ=environ)) == env
    assert value(load_settings(config, environ=environ, **{section: {key: flag}})) == flag
    # a flag not given (None) leaves the layers below it
    below = env if variable else file
    assert value(load_settings(config, environ=environ, **{section: {key: None}})) == below
    settings = load_settings(config, environ=environ, **{section: {key: flag}})
    assert settings.origin(section, key) == "command line"
    assert load_settings(config, environ=environ).origin(section, key) == (
        f"${variable}" if variable else f"config file {config}")


def test_every_environment_variable_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    names = {name for names in ENVIRONMENT.values() for name in names}
    names |= {"ACTIVEMQ_HOST", "ACTIVEMQ_PORT", "ACTIVEMQ_USE_SSL", "SWF_CONFIG"}
    assert sorted(name for name in names if f"`{name}`" not in readme) == []


# -- the broker: ours and upstream's variables -------------------------------------------------

UPSTREAM = {"ACTIVEMQ_HOST": "amq.example.org", "ACTIVEMQ_PORT": "61617",
            "ACTIVEMQ_USE_SSL": "true", "ACTIVEMQ_USER": "upstream-user",
            "ACTIVEMQ_PASSWORD": "upstream-secret", "ACTIVEMQ_SSL_CA_CERTS": "/up/ca.pem",
            "ACTIVEMQ_SSL_CERT_FILE": "/up/cert.pem", "ACTIVEMQ_SSL_KEY_FILE": "/up/key.pem"}


def test_upstream_activemq_variables_alone_give_a_broker() -> None:
    config = load_settings(environ=UPSTREAM).broker_config()
    assert (config.host, config.port, config.tls, config.user, config.password) == (
        "amq.example.org", 61617, True, "upstream-user", "upstream-secret")
    assert (config.ca_certs, config.cert_file, config.key_file) == (
        "/up/ca.pem", "/up/cert.pem", "/up/key.pem")
    # upstream's defaults: localhost, port 61612, plain TCP unless ACTIVEMQ_USE_SSL is true
    alone = load_settings(environ={"ACTIVEMQ_PORT": "61612"}).broker_config()
    assert (alone.host, alone.port, alone.tls) == ("localhost", 61612, False)
    assert load_settings(environ={"ACTIVEMQ_HOST": "h"}).broker_config().port == 61612
    assert not load_settings(environ={"ACTIVEMQ_HOST": "h", "ACTIVEMQ_USE_SSL": "False"}
                             ).broker_config().tls
    assert load_settings(environ={"ACTIVEMQ_HOST": "::1"}).broker_config().host == "::1"


def test_our_variables_win_over_upstreams(tmp_path: Path) -> None:
    ours = {"SWF_BROKER": "stomp://ours:61613", "SWF_STOMP_USER": "our-user",
            "SWF_STOMP_PASSWORD": "our-secret", "SWF_STOMP_CA_CERTS": "/ours/ca.pem",
            "SWF_STOMP_CERT_FILE": "/ours/cert.pem", "SWF_STOMP_KEY_FILE": "/ours/key.pem"}
    config = load_settings(environ={**UPSTREAM, **ours}).broker_config()
    assert (config.host, config.port, config.tls, config.user, config.password) == (
        "ours", 61613, False, "our-user", "our-secret")
    assert (config.ca_certs, config.cert_file, config.key_file) == (
        "/ours/ca.pem", "/ours/cert.pem", "/ours/key.pem")
    # both are the environment layer: over the config file, under the flag
    file = tmp_path / "swf.toml"
    file.write_text('[broker]\nurl = "stomp://file:1"\nuser = "file-user"\n')
    layered = load_settings(file, environ=UPSTREAM).broker_config()
    assert (layered.host, layered.user) == ("amq.example.org", "upstream-user")
    flagged = load_settings(file, environ=UPSTREAM, broker={"url": "stomp://flag:2"})
    assert flagged.broker_config().host == "flag"


@pytest.mark.parametrize(("environ", "problem"), [
    ({"ACTIVEMQ_PORT": "sixty"}, "$ACTIVEMQ_PORT: 'sixty' is not a port number"),
    ({"ACTIVEMQ_PORT": "70000"}, "$ACTIVEMQ_PORT: '70000' is not a port number"),
    ({"ACTIVEMQ_HOST": "h", "ACTIVEMQ_USE_SSL": "maybe"},
     "$ACTIVEMQ_USE_SSL: 'maybe' is not true or false"),
    ({"SWF_STOMP_VERIFY": "perhaps"}, "$SWF_STOMP_VERIFY: broker.verify: Input should be a "
                                      "valid boolean"),
])
def test_unusable_environment_values_are_one_line_errors(environ: dict[str, str],
                                                         problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(environ=environ)
    assert str(raised.value).startswith(problem) and "\n" not in str(raised.value)


def test_a_bad_broker_url_says_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(BrokerConfigError, match=r"^\$SWF_BROKER: not a STOMP broker URL"):
        load_settings(environ={"SWF_BROKER": "http://h:1"}).broker_config()
    with pytest.raises(BrokerConfigError, match="^no broker given"):
        load_settings(environ={}).broker_config()


# -- the config file: unknown tables and keys ---------------------------------------------------


@pytest.mark.parametrize(("text", "problem"), [
    ('[broker]\nurll = "stomp://h:1"\n', "unknown key 'urll' in [broker] (did you mean 'url'?)"),
    ("[brokr]\n", "unknown table [brokr] (did you mean 'broker'?)"),
    ('[ddm]\nbackend = "rucio"\n', "unknown table [ddm] (known: store, broker, agent, "
                                   "recorder, rucio, panda, console)"),
    ('url = "stomp://h:1"\n', "unknown key 'url' outside the tables [store], [broker]"),
    ("broker = 5\n", "[broker] must be a table"),
    ("[agent]\nheartbeat_interval = 0\n", "agent.heartbeat_interval: Input should be greater "
                                          "than 0"),
    ("[recorder]\nbatch_size = 'many'\n", "recorder.batch_size: Input should be a valid integer"),
    ("[store\n", "is not valid TOML"),
    ('[console]\nlog_networks = ["10.0.0.0/33"]\n', "console.log_networks.0: "),
])
def test_config_file_problems_are_one_line_errors(tmp_path: Path, text: str,
                                                  problem: str) -> None:
    config = tmp_path / "swf.toml"
    config.write_text(text)
    with pytest.raises(SettingsError) as raised:
        load_settings(config, environ={})
    assert problem in str(raised.value) and str(config) in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.slow
@pytest.mark.parametrize("command", [["record"], ["agent", "daq"], ["run", "--json"],
                                     ["query", "executions"]])
def test_the_cli_refuses_an_unknown_key_at_start(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "swf.toml"
    config.write_text('[broker]\nurl = "stomp://127.0.0.1:1"\n[recorder]\nbatchsize = 5\n')
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SWF_", "ACTIVEMQ_"))}
    env.update(PYTHONPATH=str(REPO), SWF_CONFIG=str(config),
               SWF_DB=f"sqlite:///{tmp_path / 'swf.db'}")
    done = subprocess.run([*SWF, *command], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (f"Error: config file {config}: unknown key 'batchsize' in "
                           f"[recorder] (did you mean 'batch_size'?)\n")
    assert not (tmp_path / "swf.db").exists()  # refused before anything was started


# -- secrets --------------------------------------------------------------------------------------


def test_no_secret_in_any_repr_message_or_log(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    secrets = [f"{name}-{uuid.uuid4().hex}" for name in ("broker", "url", "rucio", "db", "file")]
    broker_pw, url_pw, rucio_pw, db_pw, file_pw = secrets
    config = tmp_path / "swf.toml"
    config.write_text(f'[broker]\npassword = "{file_pw}"\n[rucio]\npassword = "{rucio_pw}"\n'
                      f'host = "http://u:{url_pw}@rucio:443"\n'
                      f'[panda]\nurl = "https://u:{url_pw}@panda/server/panda"\n')
    environ = {"SWF_BROKER": f"stomp+ssl://me:{url_pw}@h:61612",
               "SWF_STOMP_PASSWORD": broker_pw, "SWF_DB": f"postgresql://u:{db_pw}@db/swf"}
    settings = load_settings(config, environ=environ)
    broker = settings.broker_config()
    rucio = settings.rucio_settings()
    assert broker.password == broker_pw and rucio.password == rucio_pw  # they are there...
    assert settings.store.url.endswith(f"{db_pw}@db/swf")
    caplog.set_level(logging.DEBUG)
    logging.getLogger("swf.test").info("settings %s %r; broker %s %r; rucio %r", settings,
                                       settings, broker, broker, rucio)
    shown = " ".join([repr(settings), str(settings), repr(settings.broker),
                      repr(settings.store), repr(settings.rucio), repr(broker), str(broker),
                      broker.address, repr(rucio), rucio.where, caplog.text,
                      repr(settings.panda_settings()), repr(settings.adapter_settings())])
    for secret in secrets:  # ...and nowhere to be seen
        assert secret not in shown
    assert "postgresql://***@db/swf" in repr(settings.store)
    # nor in the errors about them
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(f'[broker]\npassword = ["{file_pw}"]\nurl = "http://me:{url_pw}@h:1"\n')
    with pytest.raises(SettingsError) as raised:
        load_settings(wrong, environ={})
    assert "broker.password" in str(raised.value)
    with pytest.raises(BrokerConfigError) as bad_url:
        load_settings(environ={"SWF_BROKER": f"http://me:{url_pw}@h:1"}).broker_config()
    for secret in secrets:
        assert secret not in str(raised.value) + str(bad_url.value)


# -- the adapters get the deployment's settings under the workflow's ----------------------------


def test_adapters_are_made_from_the_deployment_and_the_workflow(tmp_path: Path) -> None:
    rucio_cfg = tmp_path / "rucio.cfg"
    rucio_cfg.write_text("[client]\nrucio_host = http://cfg:1\naccount = cfg-account\n"
                         "username = cfg-user\npassword = cfg-password\n")
    password = tmp_path / "password"
    password.write_text("from-the-file\n")
    config = tmp_path / "swf.toml"
    config.write_text(f'[rucio]\nconfig = "{rucio_cfg}"\naccount = "toml-account"\n'
                      f'[panda]\nurl = "http://panda.toml/server/panda"\n')
    environ = {"RUCIO_HOST": "http://env:2", "RUCIO_PASSWORD_FILE": str(password)}
    deployment = load_settings(config, environ=environ).adapter_settings()
    ddm = create_adapter("ddm", tmp_path, {"ddm": {"backend": "rucio", "attempts": 2}},
                         deployment)
    assert isinstance(ddm, RucioCatalog)
    settings = ddm.settings
    # RUCIO_* over [rucio] over rucio.cfg's [client]; the password file over the password
    assert (settings.host, settings.account, settings.username, settings.password) == (
        "http://env:2", "toml-account", "cfg-user", "from-the-file")
    assert (settings.attempts, settings.problem) == (2, None)  # the workflow's option
    batch = create_adapter("batch", tmp_path, {"batch": {"backend": "panda"}}, deployment)
    assert isinstance(batch, PandaBatch)
    assert (batch.settings.url, batch.settings.plain_url) == (
        "http://panda.toml/server/panda", "http://panda.toml/server/panda")
    chosen = create_adapter("batch", tmp_path, {"batch": {
        "backend": "panda", "panda_url": "http://workflow/server/panda"}}, deployment)
    assert chosen.settings.url == "http://workflow/server/panda"  # type: ignore[attr-defined]
    # an unreadable rucio.cfg named on purpose is reported by every command, with its origin
    broken = load_settings(environ={"RUCIO_CONFIG": str(tmp_path / "missing.cfg")})
    assert broken.rucio_settings().problem.startswith(  # type: ignore[union-attr]
        f"cannot read Rucio config {tmp_path / 'missing.cfg'} ($RUCIO_CONFIG)")


def test_the_broker_config_is_a_plain_value() -> None:
    config = BrokerConfig.from_url("stomp+ssl://u:p@h:1", user="other", verify=False)
    assert (config.host, config.port, config.tls, config.user, config.password,
            config.verify) == ("h", 1, True, "other", "p", False)


def test_the_networks_upstream_log_records_come_from(tmp_path: Path) -> None:
    """[console] log_networks: loopback by default, else the file's list."""
    assert [str(net) for net in load_settings(environ={}).console.log_networks] == [
        "127.0.0.0/8", "::1/128"]
    config = tmp_path / "swf.toml"
    config.write_text('[console]\nlog_networks = ["10.1.0.0/16", "fd00::/8"]\n')
    assert [str(net) for net in load_settings(config, environ={}).console.log_networks] == [
        "10.1.0.0/16", "fd00::/8"]


@pytest.mark.parametrize(("text", "expected"), [
    ('[agent]\nheartbeat_interval = "2.5"\npayload_threads = 4.0\n',
     {"heartbeat_interval": 2.5, "payload_threads": 4}),
    ('[agent]\nuser = "x y"\n', "agent.user: String should match pattern"),
    ('[agent]\npayload_threads = 4.5\n', "agent.payload_threads: Input should be a valid integer"),
    ("[broker]\nverify = 1\n", {"verify": True}),
    ("[broker]\nuser = 5\n", "broker.user: Input should be a valid string"),
    ("[console]\nport = 70000\n", "console.port: Input should be less than or equal to 65535"),
    ('[console]\nlog_networks = "10.0.0.0/8"\n', "console.log_networks: Input should be a "
                                                 "valid list"),
    ('[store]\nsender_zone = "Mars/Olympus"\n', "unknown time zone 'Mars/Olympus'"),
])
def test_values_are_converted_to_their_kind_or_refused(tmp_path: Path, text: str,
                                                       expected: Any) -> None:
    config = tmp_path / "swf.toml"
    config.write_text(text)
    if isinstance(expected, str):
        with pytest.raises(SettingsError, match=expected):
            load_settings(config, environ={})
        return
    settings = load_settings(config, environ={})
    section = settings.agent if "agent" in text else settings.broker
    assert {key: getattr(section, key) for key in expected} == expected
    assert all(type(getattr(section, key)) is type(value) for key, value in expected.items())


def test_reading_the_settings_loads_no_validation_library() -> None:
    """Every command reads the settings at start: they must stay cheap to import (issue 15)."""
    code = ("import sys; from swf.settings import load_settings; load_settings(environ={}); "
            "print(sorted({name.split('.')[0] for name in sys.modules} & "
            "{'pydantic', 'pydantic_settings', 'alembic', 'stomp', 'fastapi'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_sections_compare_and_hash_by_value() -> None:
    """Section's own __eq__/__hash__ (the sections are eq=False dataclasses, issue 15)."""
    from swf.fields import Secret
    from swf.settings import BrokerSettings, StoreSettings

    store = StoreSettings(url="sqlite:///a.db")
    assert store == StoreSettings(url="sqlite:///a.db")
    assert hash(store) == hash(StoreSettings(url="sqlite:///a.db"))
    assert store != StoreSettings(url="sqlite:///b.db")
    assert store != StoreSettings(url="sqlite:///a.db", sender_zone="Europe/Paris")
    assert BrokerSettings() != StoreSettings()  # another section, even with no value given
    assert (BrokerSettings(password=Secret("p")) == BrokerSettings(password=Secret("p"))
            != BrokerSettings(password=Secret("q")))
    assert load_settings(environ={}) == load_settings(environ={})
    assert load_settings(environ={"SWF_DB": "sqlite:///x.db"}) != load_settings(environ={})
