"""Deployment settings: where the store, the broker, Rucio and PanDA are, how to log in, and how
the live processes (``swf agent``, ``swf record``, ``swf serve``) behave. Read from one TOML
config file, the environment and command-line flags, with one precedence for every key:

    command-line flag  >  environment variable  >  config file  >  default

The config file is ``--config PATH`` or ``$SWF_CONFIG``; its tables are ``[store]``, ``[broker]``,
``[agent]``, ``[recorder]``, ``[rucio]``, ``[panda]`` and ``[console]`` (the README's
Configuration section lists every key with its variable and default). A table or key the file
should not have, or a value of the wrong type wherever it came from, is refused at start with a
one-line error that names where it came from. Passwords are ``Secret``s: never in a repr, a
log line or an error; a URL with a password in it is shown without it. (Plain dataclasses and
swf/fields.py's converters check the values: see there why not pydantic.)

Upstream's broker variables work as they are: ``ACTIVEMQ_HOST`` (default localhost),
``ACTIVEMQ_PORT`` (default 61612) and ``ACTIVEMQ_USE_SSL`` name the broker; ``ACTIVEMQ_USER``,
``ACTIVEMQ_PASSWORD``, ``ACTIVEMQ_SSL_CA_CERTS``, ``ACTIVEMQ_SSL_CERT_FILE`` and
``ACTIVEMQ_SSL_KEY_FILE`` log in. Ours win where both are set: ``SWF_BROKER`` over the
ACTIVEMQ_HOST/PORT/USE_SSL address, ``SWF_STOMP_USER`` over ``ACTIVEMQ_USER``, and so on. Both
are the environment layer: either beats the config file's ``[broker]`` table.

Rucio: ``[rucio]`` (with the ``RUCIO_*`` variables) over the ``[client]`` section of the rucio.cfg
that Rucio itself would read (``[rucio] config``/``RUCIO_CONFIG``, else ``$RUCIO_HOME``,
``$VIRTUAL_ENV`` or ``$CONDA_PREFIX`` ``/etc/rucio.cfg``, else ``/opt/rucio/etc/rucio.cfg``).
What third-party clients read by themselves stays theirs: pandaclient takes its credentials
from ``PANDA_AUTH``, ``PANDA_AUTH_VO``, ``PANDA_AUTH_ID_TOKEN``, ``OIDC_AUTH_*``,
``PANDA_CONFIG_ROOT`` and ``X509_USER_PROXY`` (and reads ``PANDA_URL``/``PANDA_URL_SSL`` at
import; the adapter points it at ``[panda]``'s URLs before every call); rucio-clients reads its
rucio.cfg for anything not passed to it (request retries, token lifetimes).

Workflow parameters are not settings: they are agents/config.py's (TOML workflows and
``--set``) and travel in the log, so every agent of an execution uses the same.

    settings = load_settings("swf.toml", broker={"url": flag_value})   # flags: None = not given
    settings.broker_config(), settings.store.url, settings.adapter_settings()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from agents.defaults import BATCH_SIZE, BATCH_WAIT, DEFAULT_USER, PREFETCH, RECORDER_NAME
from eventstore.catalog import resolve_zone
from eventstore.engine import DEFAULT_URL

from .fields import (
    Invalid,
    Problem,
    Secret,
    Section,
    above,
    between,
    flag,
    integer,
    matching,
    networks,
    number,
    optional,
    path,
    secret,
    setting,
    text,
)

if TYPE_CHECKING:  # the adapters' and the broker's modules are imported by the methods that
    # build their settings: most commands need none of them (agents.transport: ~3 ms)
    from agents.batch.panda import PandaSettings
    from agents.ddm.rucio import RucioSettings
    from agents.registry import AdapterSettings
    from agents.transport.broker import BrokerConfig

UPSTREAM_PORT = 61612  # ACTIVEMQ_PORT's default, as in upstream's BaseAgent
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_OPTIONAL_TEXT = optional(text)
_POSITIVE_INT = above(integer, 0)


class SettingsError(ValueError):
    """The settings are unusable; the message is one line, says where the value came from and
    holds no secret."""


def _known_zone(value: Any) -> str:
    name = text(value)
    try:
        resolve_zone(name)
    except ValueError as problem:  # it names the unknown zone
        raise Invalid(f"Value error, {problem}") from None
    return name


# -- the sections --------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False, eq=False)  # Section compares and hashes
class StoreSettings(Section):
    """[store]: the event store."""

    url: str = setting(DEFAULT_URL, text)  # SQLAlchemy URL; postgresql://user@host:5432/db
    # The IANA zone senders' naive local times are read in (by swf record, swf import, swf serve
    # and the live agents alike, so that they all store and decide on the same times).
    sender_zone: str = setting("UTC", _known_zone)


@dataclass(frozen=True, repr=False, eq=False)  # Section compares and hashes
class BrokerSettings(Section):
    """[broker]: the ActiveMQ broker and how to log in."""

    url: str | None = setting(None, _OPTIONAL_TEXT)  # stomp://HOST:PORT or stomp+ssl://HOST:PORT
    user: str | None = setting(None, _OPTIONAL_TEXT)
    password: Secret | None = setting(None, optional(secret))
    ca_certs: str | None = setting(None, _OPTIONAL_TEXT)
    cert_file: str | None = setting(None, _OPTIONAL_TEXT)
    key_file: str | None = setting(None, _OPTIONAL_TEXT)
    verify: bool = setting(True, flag)  # check the broker's certificate (TLS)
    vhost: str | None = setting(None, _OPTIONAL_TEXT)


@dataclass(frozen=True, repr=False, eq=False)  # Section compares and hashes
class AgentSettings(Section):
    """[agent]: how a live agent names itself, where its data goes, how it runs."""

    # Who executions and agents are recorded as ({workflow}-{user}-0001, TYPE-agent-{user}):
    # a setting, never the login name, so a run does not depend on who starts it.
    user: str = setting(DEFAULT_USER, matching(r"^[A-Za-z0-9_.]+$"))
    name: str | None = setting(None, _OPTIONAL_TEXT)  # default TYPE-agent-{user}
    namespace: str | None = setting(None, _OPTIONAL_TEXT)  # default: the default workflow's
    # The store's STF files, local DDM and batch state (also `swf run`'s); default: beside the
    # store's SQLite file (agents/dataroot.py), required for any other store.
    data_dir: Path | None = setting(None, optional(path))
    heartbeat_interval: float = setting(60.0, above(number, 0))
    payload_threads: int = setting(32, _POSITIVE_INT)
    sent_log: Path | None = setting(None, optional(path))


@dataclass(frozen=True, repr=False, eq=False)  # Section compares and hashes
class RecorderSettings(Section):
    """[recorder]: `swf record`'s subscriptions and batches."""

    name: str = setting(RECORDER_NAME, text)  # client-id and durable subscription prefix
    batch_size: int = setting(BATCH_SIZE, _POSITIVE_INT)
    batch_wait: float = setting(BATCH_WAIT, between(number, 0, float("inf")))
    prefetch: int = setting(PREFETCH, _POSITIVE_INT)


@dataclass(frozen=True, repr=False, eq=False)  # Section compares and hashes
class ConsoleSettings(Section):
    """[console]: where `swf serve` listens and who may call it."""

    host: str = setting("127.0.0.1", text)  # any other address needs a token
    port: int = setting(8080, between(integer, 0, 65535))
    token: Secret | None = setting(None, optional(secret))  # required by every request when set
    # Networks whose POST /api/logs/ needs no token: upstream's REST log handler sends none.
    log_networks: tuple[IPv4Network | IPv6Network, ...] = setting(
        (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")), networks)


@dataclass(frozen=True, repr=False, eq=False)  # Section compares and hashes
class RucioSection(Section):
    """[rucio]: the Rucio server and credentials (over its own rucio.cfg)."""

    config: str | None = setting(None, _OPTIONAL_TEXT)  # a rucio.cfg whose [client] is lowest
    host: str | None = setting(None, _OPTIONAL_TEXT)
    auth_host: str | None = setting(None, _OPTIONAL_TEXT)
    account: str | None = setting(None, _OPTIONAL_TEXT)
    auth_type: str | None = setting(None, _OPTIONAL_TEXT)
    username: str | None = setting(None, _OPTIONAL_TEXT)
    password: Secret | None = setting(None, optional(secret))
    password_file: str | None = setting(None, _OPTIONAL_TEXT)  # read for the password; wins
    vo: str | None = setting(None, _OPTIONAL_TEXT)
    ca_cert: str | None = setting(None, _OPTIONAL_TEXT)
    client_cert: str | None = setting(None, _OPTIONAL_TEXT)
    client_key: str | None = setting(None, _OPTIONAL_TEXT)
    client_proxy: str | None = setting(None, _OPTIONAL_TEXT)


@dataclass(frozen=True, repr=False, eq=False)  # Section compares and hashes
class PandaSection(Section):
    """[panda]: the PanDA server."""

    url: str | None = setting(None, _OPTIONAL_TEXT)  # PANDA_URL
    url_ssl: str | None = setting(None, _OPTIONAL_TEXT)  # PANDA_URL_SSL (default: url)


# (section, key) -> environment variables, first set one wins (ours before upstream's)
ENVIRONMENT: dict[tuple[str, str], tuple[str, ...]] = {
    ("store", "url"): ("SWF_DB",),
    ("store", "sender_zone"): ("SWF_SENDER_ZONE",),
    ("broker", "url"): ("SWF_BROKER",),  # else ACTIVEMQ_HOST/ACTIVEMQ_PORT/ACTIVEMQ_USE_SSL
    ("broker", "user"): ("SWF_STOMP_USER", "ACTIVEMQ_USER"),
    ("broker", "password"): ("SWF_STOMP_PASSWORD", "ACTIVEMQ_PASSWORD"),
    ("broker", "ca_certs"): ("SWF_STOMP_CA_CERTS", "ACTIVEMQ_SSL_CA_CERTS"),
    ("broker", "cert_file"): ("SWF_STOMP_CERT_FILE", "ACTIVEMQ_SSL_CERT_FILE"),
    ("broker", "key_file"): ("SWF_STOMP_KEY_FILE", "ACTIVEMQ_SSL_KEY_FILE"),
    ("broker", "verify"): ("SWF_STOMP_VERIFY",),
    ("broker", "vhost"): ("SWF_STOMP_VHOST",),
    ("agent", "data_dir"): ("SWF_DATA",),
    ("agent", "user"): ("SWF_USER",),
    ("rucio", "config"): ("RUCIO_CONFIG",),
    ("rucio", "host"): ("RUCIO_HOST",),
    ("rucio", "auth_host"): ("RUCIO_AUTH_HOST",),
    ("rucio", "account"): ("RUCIO_ACCOUNT",),
    ("rucio", "auth_type"): ("RUCIO_AUTH_TYPE",),
    ("rucio", "username"): ("RUCIO_USERNAME",),
    ("rucio", "password_file"): ("RUCIO_PASSWORD_FILE",),
    ("rucio", "vo"): ("RUCIO_VO",),
    ("panda", "url"): ("PANDA_URL",),
    ("panda", "url_ssl"): ("PANDA_URL_SSL",),
    ("console", "token"): ("SWF_API_TOKEN",),
}
ACTIVEMQ_ADDRESS = ("ACTIVEMQ_HOST", "ACTIVEMQ_PORT", "ACTIVEMQ_USE_SSL")


# -- the whole ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Inputs:
    """One load's layers: environment values and config-file tables, with where each came from."""

    environ: Mapping[str, str]
    environment: dict[str, dict[str, Any]]
    file: dict[str, Any]
    origins: dict[tuple[str, str], str]  # (section, key) -> its highest layer, for messages


_NO_INPUTS = _Inputs(environ={}, environment={}, file={}, origins={})


@dataclass(frozen=True)
class Settings:
    """Every deployment setting. Build it with ``load_settings`` (it reads the layers)."""

    store: StoreSettings = field(default_factory=StoreSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    recorder: RecorderSettings = field(default_factory=RecorderSettings)
    rucio: RucioSection = field(default_factory=RucioSection)
    panda: PandaSection = field(default_factory=PandaSection)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    _inputs: _Inputs = field(default=_NO_INPUTS, repr=False, compare=False)

    SECTIONS: ClassVar[tuple[str, ...]] = ("store", "broker", "agent", "recorder", "rucio",
                                           "panda", "console")

    def origin(self, section: str, key: str) -> str:
        """Where a setting came from: the command line, an environment variable, the config
        file, or its default."""
        return self._inputs.origins.get((section, key), "default")

    # -- the typed settings the libraries take ----------------------------------------------------

    def broker_config(self) -> BrokerConfig:
        from agents.transport.broker import BrokerConfig, BrokerConfigError

        broker = self.broker
        if not broker.url:
            raise BrokerConfigError(
                "no broker given: pass --broker stomp://HOST:PORT (or set SWF_BROKER or "
                "ACTIVEMQ_HOST, or [broker] url in the config file)")
        try:
            return BrokerConfig.from_url(
                broker.url, user=broker.user, password=_secret(broker.password),
                ca_certs=broker.ca_certs, cert_file=broker.cert_file, key_file=broker.key_file,
                verify=broker.verify, vhost=broker.vhost)
        except BrokerConfigError as problem:
            raise BrokerConfigError(f"{self.origin('broker', 'url')}: {problem}") from None

    def rucio_settings(self) -> RucioSettings:
        """``[rucio]`` over the ``[client]`` section of Rucio's own rucio.cfg. A file that cannot
        be read is a ``problem`` the adapter reports on every command (only a workflow that uses
        Rucio needs these settings)."""
        import configparser  # here: only a workflow that uses Rucio reads its rucio.cfg

        from agents.ddm.rucio import RucioSettings, read_client_section

        rucio = self.rucio
        path = rucio.config or _standard_rucio_config(self._inputs.environ)
        values: dict[str, Any] = {}
        problem = None
        if path:
            try:
                values.update(read_client_section(os.path.expanduser(path)))
            except (OSError, configparser.Error) as exc:
                if rucio.config:  # named on purpose: must be readable
                    origin = self.origin("rucio", "config")
                    problem = f"cannot read Rucio config {path} ({origin}): {exc}"
        for key in ("host", "auth_host", "account", "auth_type", "username", "vo", "ca_cert",
                    "client_cert", "client_key", "client_proxy"):
            if getattr(rucio, key) is not None:
                values[key] = getattr(rucio, key)
        if rucio.password is not None:
            values["password"] = rucio.password.get_secret_value()
        if rucio.password_file:
            try:
                text = Path(os.path.expanduser(rucio.password_file)).read_text(encoding="utf-8")
                values["password"] = text.strip()
            except OSError as exc:
                problem = f"cannot read the Rucio password file " \
                          f"({self.origin('rucio', 'password_file')}): {exc.strerror}"
        source = f"[rucio] settings and {path}" if path else "[rucio] settings"
        return RucioSettings(**values, source=source, problem=problem)

    def panda_settings(self) -> PandaSettings:
        from agents.batch.panda import PandaSettings

        url = self.panda.url_ssl or self.panda.url
        return PandaSettings(url=url, plain_url=self.panda.url or url)

    def adapter_settings(self) -> AdapterSettings:
        """What ``agents.registry.create_adapter`` needs of the deployment."""
        from agents.registry import AdapterSettings

        return AdapterSettings(rucio=self.rucio_settings(), panda=self.panda_settings())


def load_settings(config_file: str | os.PathLike[str] | None = None, *,
                  environ: Mapping[str, str] | None = None,
                  **flags: Mapping[str, Any] | None) -> Settings:
    """The settings from ``flags`` (per section, e.g. ``broker={"url": ...}``; None values are
    flags not given), the environment (default ``os.environ``) and the config file
    (``config_file``, else ``$SWF_CONFIG``, else none)."""
    env = os.environ if environ is None else environ
    path = config_file if config_file is not None else (env.get("SWF_CONFIG") or None)
    given = {section: {key: value for key, value in (values or {}).items() if value is not None}
             for section, values in flags.items()}
    init: dict[str, Any] = {section: values for section, values in given.items() if values}
    inputs = _read_inputs(env, path, init)
    layered = _layered(inputs.file, inputs.environment, init)
    sections: dict[str, Section] = {}
    problems: list[str] = []
    where = f"config file {path}"
    for name, values in layered.items():
        model = _SECTION_MODELS.get(name)
        if model is None:
            problems.append(f"{where}: unknown table [{name}]{_hint(name, Settings.SECTIONS)}"
                            if isinstance(values, dict) else
                            f"{where}: unknown key {name!r} outside the tables "
                            f"{', '.join(f'[{known}]' for known in Settings.SECTIONS)}")
        elif not isinstance(values, dict):
            problems.append(f"{where}: [{name}] must be a table")
        else:
            section, wrong = model.build(values)
            problems.extend(_described(name, model, wrong, inputs, where))
            if section is not None:
                sections[name] = section
    if problems:
        raise SettingsError("; ".join(problems))
    return Settings(**sections, _inputs=inputs)  # type: ignore[arg-type]


def broker_config(url: str | None = None, *, config_file: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> BrokerConfig:
    """The broker to use: ``url`` (as ``--broker``) over the environment over the config file."""
    return load_settings(config_file, environ=environ, broker={"url": url}).broker_config()


def read_config_file(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A TOML config file as a dict ({} without a path)."""
    if path is None:
        return {}
    import tomllib  # here: most commands run without a config file, and it costs ~2 ms

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as problem:
        raise SettingsError(f"cannot read config file {path}: {problem.strerror}") from None
    except tomllib.TOMLDecodeError as problem:
        raise SettingsError(f"config file {path} is not valid TOML: {problem}") from None


# -- internals -----------------------------------------------------------------------------------


def _read_inputs(env: Mapping[str, str], path: str | os.PathLike[str] | None,
                 flags: dict[str, dict[str, Any]]) -> _Inputs:
    file = read_config_file(path)
    environment: dict[str, dict[str, Any]] = {}
    origins: dict[tuple[str, str], str] = {}
    for section, table in file.items():
        if isinstance(table, dict):
            for key in table:
                origins[(section, key)] = f"config file {path}"
    address = _activemq_address(env)
    if address is not None:
        environment.setdefault("broker", {})["url"] = address
        origins[("broker", "url")] = "$" + "/$".join(name for name in ACTIVEMQ_ADDRESS
                                                     if env.get(name))
    for (section, key), names in ENVIRONMENT.items():
        name = next((name for name in names if env.get(name)), None)
        if name is not None:
            environment.setdefault(section, {})[key] = env[name]
            origins[(section, key)] = f"${name}"
    for section, values in flags.items():
        for key in values:
            origins[(section, key)] = "command line"
    return _Inputs(environ=env, environment=environment, file=file, origins=origins)


def _layered(*layers: dict[str, Any]) -> dict[str, Any]:
    """The layers merged, later ones winning key by key inside tables (a table in a lower
    layer is merged into, anything else is replaced)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            below = merged.get(key)
            merged[key] = (_layered(below, value) if isinstance(below, dict)
                           and isinstance(value, dict) else value)
    return merged


def _activemq_address(env: Mapping[str, str]) -> str | None:
    """Upstream's broker address (ACTIVEMQ_HOST, _PORT, _USE_SSL) as a URL, if any is set."""
    host, port, ssl = (env.get(name) or "" for name in ACTIVEMQ_ADDRESS)
    if not (host or port or ssl):
        return None
    if port and not (port.strip().isdigit() and 0 < int(port) < 65536):
        raise SettingsError(f"$ACTIVEMQ_PORT: {port!r} is not a port number")
    if ssl and ssl.strip().lower() not in _TRUE | _FALSE:
        raise SettingsError(f"$ACTIVEMQ_USE_SSL: {ssl!r} is not true or false")
    tls = ssl.strip().lower() in _TRUE
    host = host.strip() or "localhost"
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    return f"{'stomp+ssl' if tls else 'stomp'}://{host}:{port.strip() or UPSTREAM_PORT}"


def _standard_rucio_config(env: Mapping[str, str]) -> str | None:
    """The rucio.cfg rucio-clients would find without RUCIO_CONFIG."""
    for variable in ("RUCIO_HOME", "VIRTUAL_ENV", "CONDA_PREFIX"):
        if env.get(variable):
            candidate = os.path.join(env[variable], "etc", "rucio.cfg")
            if os.path.exists(candidate):
                return candidate
    return "/opt/rucio/etc/rucio.cfg" if os.path.exists("/opt/rucio/etc/rucio.cfg") else None


def _described(section: str, model: type[Section], problems: list[Problem], inputs: _Inputs,
               where: str) -> list[str]:
    """A section's problems as lines, each with where the value came from (never the value)."""
    lines = []
    for (key, *inside), message in problems:
        if message is None:
            lines.append(f"{where}: unknown key {key!r} in [{section}]{_hint(key, model.keys())}")
        else:
            origin = inputs.origins.get((section, key), where)
            lines.append(f"{origin}: {'.'.join((section, key, *inside))}: {message}")
    return lines


def _hint(name: str, known: Any) -> str:
    import difflib  # here: only a mistyped name needs it

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


def _secret(value: Secret | None) -> str | None:
    return None if value is None else value.get_secret_value()



_SECTION_MODELS: dict[str, type[Section]] = {
    "store": StoreSettings, "broker": BrokerSettings, "agent": AgentSettings,
    "recorder": RecorderSettings, "rucio": RucioSection, "panda": PandaSection,
    "console": ConsoleSettings}

__all__ = ["ENVIRONMENT", "Settings", "SettingsError", "broker_config", "load_settings",
           "read_config_file"]
