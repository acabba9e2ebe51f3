"""Configure and initialise one local Rucio server instance (run by server.sh).

Runs with the Python of the Rucio virtualenv (it imports the `rucio` server package):

    bootstrap.py setup DIR PORT    render DIR/rucio.cfg and DIR/alembic.ini from the templates
                                   next to this file (the root password is generated once per
                                   instance, kept in DIR/credentials, mode 0600), then, with
                                   RUCIO_CONFIG=DIR/rucio.cfg, build the SQLite schema, the base
                                   VO and the root account, the RSE and the scopes. Idempotent:
                                   a restart keeps the database (DIR/.bootstrapped marks it done)
    bootstrap.py free-port         print a free TCP port on 127.0.0.1

Environment: SWF_RUCIO_RSE (default DAQ_DISK), SWF_RUCIO_SCOPES (comma-separated, default
group.daq; each is created for account root).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ACCOUNT = "root"
USERNAME = "root"


def _render(template: Path, target: Path, values: dict[str, str]) -> None:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise SystemExit(f"bootstrap.py: unfilled placeholders in {template.name}: {leftover}")
    tmp = target.with_suffix(target.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, target)


def _password(directory: Path) -> str:
    """The instance's root password: generated on first use, then read back."""
    path = directory / "credentials"
    if path.exists():
        password = path.read_text().strip()
        if password:
            return password
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def _migrate_repo() -> Path:
    """rucio/db/sqla/migrate_repo of the installed server, found without importing rucio."""
    spec = importlib.util.find_spec("rucio")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bootstrap.py: the rucio server package is not installed in this Python")
    repo = Path(next(iter(spec.submodule_search_locations))) / "db" / "sqla" / "migrate_repo"
    if not (repo / "env.py").is_file():
        raise SystemExit(f"bootstrap.py: no alembic migration repository at {repo}")
    return repo.resolve()


def cmd_config(directory: Path, port: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("log", "rse", "client-token"):
        (directory / sub).mkdir(exist_ok=True)
    values = {
        "DIR": str(directory),
        "PORT": str(port),
        "USERNAME": USERNAME,
        "ACCOUNT": ACCOUNT,
        "PASSWORD": _password(directory),
        "MIGRATE_REPO": str(_migrate_repo()),
    }
    _render(HERE / "rucio.cfg.in", directory / "rucio.cfg", values)
    _render(HERE / "alembic.ini.in", directory / "alembic.ini", values)


def cmd_init(directory: Path) -> None:
    marker = directory / ".bootstrapped"
    if marker.exists():
        return
    # rucio reads its configuration when first imported
    os.environ["RUCIO_CONFIG"] = str(directory / "rucio.cfg")

    fresh = not (directory / ".schema").exists()
    if fresh:
        # a new instance, or one whose first bootstrap died half-way: start from nothing
        # (before importing rucio, which may open the database at import)
        (directory / "rucio.db").unlink(missing_ok=True)

    from rucio.common.exception import Duplicate, RSEProtocolPriorityError
    from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
    from rucio.gateway import rse as rse_gateway
    from rucio.gateway import scope as scope_gateway

    if fresh:
        build_database()
        create_base_vo()
        create_root_account()
        (directory / ".schema").touch()

    rse = os.environ.get("SWF_RUCIO_RSE", "DAQ_DISK")
    with contextlib.suppress(Duplicate):
        rse_gateway.add_rse(rse, issuer=ACCOUNT, deterministic=True)
    prefix = str(directory / "rse") + "/"
    all_ops = {"read": 1, "write": 1, "delete": 1}
    protocol = {
        "scheme": "file",
        "hostname": "localhost",
        "port": 0,
        "prefix": prefix,
        "impl": "rucio.rse.protocols.posix.Default",
        "domains": {"lan": dict(all_ops), "wan": dict(all_ops)},
    }
    with contextlib.suppress(Duplicate, RSEProtocolPriorityError):
        rse_gateway.add_protocol(rse, issuer=ACCOUNT, data=protocol)

    scopes = [s.strip() for s in os.environ.get("SWF_RUCIO_SCOPES", "group.daq").split(",")]
    for scope in filter(None, scopes):
        with contextlib.suppress(Duplicate):
            scope_gateway.add_scope(scope, ACCOUNT, issuer=ACCOUNT)
    marker.touch()


def cmd_free_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def main(argv: list[str]) -> None:
    if len(argv) >= 1 and argv[0] == "free-port":
        cmd_free_port()
    elif len(argv) == 3 and argv[0] == "setup":
        directory = Path(argv[1]).resolve()
        cmd_config(directory, int(argv[2]))
        cmd_init(directory)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
