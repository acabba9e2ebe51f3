"""Deployment settings: where the store, the broker, Rucio and PanDA are, how to log in, and how
the live processes (``swf agent``, ``swf record``, ``swf serve``) behave. Read from one TOML
config file, the environment and command-line flags, with one precedence for every key:

    command-line flag  >  environment variable  >  config file  >  default

The config file is ``--config PATH`` or ``$SWF_CONFIG``; its tables are ``[store]``, ``[broker]``,
``[agent]``, ``[recorder]``, ``[rucio]``, ``[panda]`` and ``[console]`` (the README's
Configuration section lists every key with its variable and default). A table or key the file
should not have, or a value of the wrong type wherever it came from, is refused at start with a
one-line error that names where it came from. Passwords are ``SecretStr``: never in a repr, a
log line or an error; a URL with a password in it is shown without it.

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

import configparser
import contextvars
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agents.batch.panda import PandaSettings
from agents.ddm.rucio import RucioSettings, read_client_section
from agents.recorder import BATCH_SIZE, BATCH_WAIT, DEFAULT_NAME, PREFETCH
from agents.registry import AdapterSettings
from agents.runtime import DEFAULT_USER
from agents.transport.broker import BrokerConfig, BrokerConfigError
from eventstore.catalog import resolve_zone
from eventstore.store import DEFAULT_URL

UPSTREAM_PORT = 61612  # ACTIVEMQ_PORT's default, as in upstream's BaseAgent
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


class SettingsError(ValueError):
    """The settings are unusable; the message is one line, says where the value came from and
    holds no secret."""


# -- the sections --------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, _public(value) if isinstance(value, str) else value


class StoreSettings(_Section):
    url: str = DEFAULT_URL  # SQLAlchemy URL; PostgreSQL: postgresql://user@host:5432/db
    # The IANA zone senders' naive local times are read in (by swf record, swf import, swf serve
    # and the live agents alike, so that they all store and decide on the same times).
    sender_zone: str = "UTC"

    @field_validator("sender_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        resolve_zone(value)  # ValueError names the unknown zone
        return value


class BrokerSettings(_Section):
    url: str | None = None  # stomp://HOST:PORT or stomp+ssl://HOST:PORT
    user: str | None = None
    password: SecretStr | None = None
    ca_certs: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True  # check the broker's certificate (TLS)
    vhost: str | None = None


class AgentSettings(_Section):
    # Who executions and agents are recorded as ({workflow}-{user}-0001, TYPE-agent-{user}):
    # a setting, never the login name, so a run does not depend on who starts it.
    user: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.]+$")] = DEFAULT_USER
    name: str | None = None  # default TYPE-agent-{user}
    namespace: str | None = None  # default: the default workflow's
    # The store's STF files, local DDM and batch state (also `swf run`'s); default: beside the
    # store's SQLite file (agents/dataroot.py), required for any other store.
    data_dir: Path | None = None
    heartbeat_interval: PositiveFloat = 60.0
    payload_threads: PositiveInt = 32
    sent_log: Path | None = None


class RecorderSettings(_Section):
    name: str = DEFAULT_NAME  # client-id and durable subscription prefix
    batch_size: PositiveInt = BATCH_SIZE
    batch_wait: NonNegativeFloat = BATCH_WAIT
    prefetch: PositiveInt = PREFETCH


class ConsoleSettings(_Section):
    host: str = "127.0.0.1"  # any other address needs a token
    port: int = Field(default=8080, ge=0, le=65535)
    token: SecretStr | None = None  # required by every request when set
    # Networks whose POST /api/logs/ needs no token: upstream's REST log handler sends none.
    log_networks: tuple[IPvAnyNetwork, ...] = (IPv4Network("127.0.0.0/8"),
                                               IPv6Network("::1/128"))


class RucioSection(_Section):
    config: str | None = None  # a rucio.cfg whose [client] section is the lowest layer
    host: str | None = None
    auth_host: str | None = None
    account: str | None = None
    auth_type: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None  # read for the password; wins over `password`
    vo: str | None = None
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    client_proxy: str | None = None


class PandaSection(_Section):
    url: str | None = None  # PANDA_URL
    url_ssl: str | None = None  # PANDA_URL_SSL (default: url)


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


_INPUTS: contextvars.ContextVar[_Inputs | None] = contextvars.ContextVar("swf_settings",
                                                                          default=None)


class _Layer(PydanticBaseSettingsSource):
    """A layer of already-read values (the environment's or the config file's)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.values


class Settings(BaseSettings):
    """Every deployment setting. Build it with ``load_settings`` (it knows the config file)."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    store: StoreSettings = Field(default_factory=StoreSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    recorder: RecorderSettings = Field(default_factory=RecorderSettings)
    rucio: RucioSection = Field(default_factory=RucioSection)
    panda: PandaSection = Field(default_factory=PandaSection)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    _inputs: _Inputs = PrivateAttr()
    SECTIONS: ClassVar[tuple[str, ...]] = ("store", "broker", "agent", "recorder", "rucio",
                                           "panda", "console")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (the keyword arguments), then the environment, then the config file (ours: not
        pydantic-settings' own environment, dotenv and secrets sources)."""
        inputs = _INPUTS.get() or _read_inputs(os.environ, None, {})
        return (init_settings, _Layer(settings_cls, inputs.environment),
                _Layer(settings_cls, inputs.file))

    def model_post_init(self, context: Any) -> None:
        self._inputs = _INPUTS.get() or _read_inputs(os.environ, None, {})

    def origin(self, section: str, key: str) -> str:
        """Where a setting came from: the command line, an environment variable, the config
        file, or its default."""
        return self._inputs.origins.get((section, key), "default")

    # -- the typed settings the libraries take ----------------------------------------------------

    def broker_config(self) -> BrokerConfig:
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
        url = self.panda.url_ssl or self.panda.url
        return PandaSettings(url=url, plain_url=self.panda.url or url)

    def adapter_settings(self) -> AdapterSettings:
        """What ``agents.registry.create_adapter`` needs of the deployment."""
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
    token = _INPUTS.set(inputs)
    try:
        return Settings(**init)
    except ValidationError as problem:
        raise SettingsError(_describe(problem, inputs, path)) from None
    finally:
        _INPUTS.reset(token)


def broker_config(url: str | None = None, *, config_file: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> BrokerConfig:
    """The broker to use: ``url`` (as ``--broker``) over the environment over the config file."""
    return load_settings(config_file, environ=environ, broker={"url": url}).broker_config()


def read_config_file(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A TOML config file as a dict ({} without a path)."""
    if path is None:
        return {}
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


def _describe(problem: ValidationError, inputs: _Inputs,
              path: str | os.PathLike[str] | None) -> str:
    """pydantic's errors as one line, each with where the value came from (never the value)."""
    where = f"config file {path}"
    lines = []
    for error in problem.errors():
        loc = [str(part) for part in error["loc"]]
        if error["type"] == "extra_forbidden" and len(loc) == 1:
            lines.append(f"{where}: unknown table [{loc[0]}]{_hint(loc[0], Settings.SECTIONS)}"
                         if isinstance(inputs.file.get(loc[0]), dict) else
                         f"{where}: unknown key {loc[0]!r} outside the tables "
                         f"{', '.join(f'[{name}]' for name in Settings.SECTIONS)}")
        elif error["type"] == "extra_forbidden":
            known = _SECTION_MODELS[loc[0]].model_fields
            lines.append(f"{where}: unknown key {loc[1]!r} in [{loc[0]}]{_hint(loc[1], known)}")
        elif len(loc) == 1:
            lines.append(f"{where}: [{loc[0]}] must be a table")
        else:
            origin = inputs.origins.get((loc[0], loc[1]), where)
            lines.append(f"{origin}: {'.'.join(loc)}: {error['msg']}")
    return "; ".join(lines)


def _hint(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def _public(text: str) -> str:
    """A URL without the password its userinfo may hold (anything else unchanged)."""
    if "://" not in text or "@" not in text:
        return text
    parts = urlsplit(text)
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "store": StoreSettings, "broker": BrokerSettings, "agent": AgentSettings,
    "recorder": RecorderSettings, "rucio": RucioSection, "panda": PandaSection,
    "console": ConsoleSettings}

__all__ = ["ENVIRONMENT", "Settings", "SettingsError", "broker_config", "load_settings",
           "read_config_file"]
