"""A real Rucio server (deploy/rucio/server.sh) with the real rucio-clients.

The behaviour the swf Rucio adapter (and its embedded stand-in) maps, with the exception classes
rucio-clients 41.5.1 raises (all in ``rucio.common.exception``):

* ``add_dataset`` of an existing name -> ``DataIdentifierAlreadyExists``;
* ``attach_dids`` to a closed dataset -> ``UnsupportedOperation``;
* ``add_replicas`` of an existing replica -> ``True``, size and checksum unchanged;
* an ``adler32`` that is not 8 hex digits (or not a string) -> ``InvalidObject``; a replica
  without ``adler32`` is accepted; one without ``bytes`` fails with a bare ``RucioException``
  (an HTTP 500 on the server);
* ``set_metadata`` of a key that is not a DID column (SQLite, no JSON plugin) ->
  ``InvalidMetadata``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from servers import RucioServer

pytest_plugins = ["servers"]  # the rucio_server fixture

# the first run installs the server into a virtualenv (about a minute or two)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SCOPE = "group.daq"
RUCIO_SH = Path(__file__).resolve().parent.parent / "deploy" / "rucio" / "server.sh"


@pytest.fixture(scope="module")
def client(rucio_server: RucioServer) -> Any:
    return rucio_server.client()


@pytest.fixture
def dataset(client: Any) -> str:
    name = f"swf.{uuid.uuid4().hex[:12]}.run"
    client.add_dataset(SCOPE, name)
    return name


def files(prefix: str, count: int, size: int = 1000) -> list[dict[str, Any]]:
    return [
        {"scope": SCOPE, "name": f"{prefix}.{i:06d}.stf", "bytes": size + i, "adler32": f"{i:08x}"}
        for i in range(count)
    ]


def dids(items: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"scope": f["scope"], "name": f["name"]} for f in items]


def test_server_identity_and_setup(rucio_server: RucioServer, client: Any) -> None:
    assert client.whoami()["account"] == "root"
    assert client.ping()["version"].startswith("41.5.1")
    assert rucio_server.host.startswith("http://127.0.0.1:")
    assert SCOPE in client.list_scopes()
    rse = client.get_rse(rucio_server.rse)
    assert rse["deterministic"] is True
    (protocol,) = client.get_protocols(rucio_server.rse)
    assert protocol["scheme"] == "file"
    assert protocol["prefix"] == f"{rucio_server.directory}/rse/"
    assert protocol["domains"]["wan"]["write"] == 1
    # the password is per instance and private to its owner
    mode = stat.S_IMODE(rucio_server.password_file.stat().st_mode)
    assert mode == 0o600
    assert len(rucio_server.password) >= 24


def test_clients_keep_their_tokens_apart(rucio_server: RucioServer) -> None:
    first, second = rucio_server.client(), rucio_server.client()
    assert first.token_path != second.token_path
    assert str(rucio_server.directory) in first.token_path
    assert first.whoami()["account"] == second.whoami()["account"] == "root"


def test_add_dataset_twice(client: Any, dataset: str) -> None:
    from rucio.common.exception import DataIdentifierAlreadyExists

    with pytest.raises(DataIdentifierAlreadyExists):
        client.add_dataset(SCOPE, dataset)


def test_replicas_attached_to_a_dataset_are_listed(
    rucio_server: RucioServer, client: Any, dataset: str
) -> None:
    batch = files(dataset, 3)
    assert client.add_replicas(rucio_server.rse, batch) is True
    assert client.attach_dids(SCOPE, dataset, dids(batch)) is True
    listed = sorted(client.list_files(SCOPE, dataset), key=lambda f: f["name"])
    assert [(f["name"], f["bytes"], f["adler32"]) for f in listed] == [
        (f["name"], f["bytes"], f["adler32"]) for f in batch
    ]


def test_run_number_metadata(client: Any, dataset: str) -> None:
    from rucio.common.exception import InvalidMetadata

    assert client.set_metadata(SCOPE, dataset, "run_number", 100001) is True
    assert client.get_metadata(SCOPE, dataset)["run_number"] == 100001
    with pytest.raises(InvalidMetadata):
        client.set_metadata(SCOPE, dataset, "swf_free_form_key", "x")


def test_attach_to_a_closed_dataset(rucio_server: RucioServer, client: Any, dataset: str) -> None:
    from rucio.common.exception import UnsupportedOperation

    first, late = files(dataset, 2)
    client.add_replicas(rucio_server.rse, [first, late])
    client.attach_dids(SCOPE, dataset, dids([first]))
    assert client.set_status(SCOPE, dataset, open=False) is True
    assert client.get_did(SCOPE, dataset)["open"] is False
    with pytest.raises(UnsupportedOperation):
        client.attach_dids(SCOPE, dataset, dids([late]))
    assert [f["name"] for f in client.list_files(SCOPE, dataset)] == [first["name"]]


def test_re_adding_a_replica_keeps_the_original(
    rucio_server: RucioServer, client: Any, dataset: str
) -> None:
    (original,) = files(dataset, 1, size=4242)
    assert client.add_replicas(rucio_server.rse, [original]) is True
    changed = {**original, "bytes": 1, "adler32": "deadbeef"}
    assert client.add_replicas(rucio_server.rse, [changed]) is True
    meta = client.get_metadata(SCOPE, original["name"])
    assert (meta["bytes"], meta["adler32"]) == (original["bytes"], original["adler32"])


@pytest.mark.parametrize("checksum", ["xyz", "1234567", "123456789", "GGGGGGGG", 12345678])
def test_bad_checksum_is_rejected(rucio_server: RucioServer, client: Any, checksum: Any) -> None:
    from rucio.common.exception import InvalidObject

    replica = {"scope": SCOPE, "name": f"bad.{uuid.uuid4().hex}.stf", "bytes": 1}
    with pytest.raises(InvalidObject):
        client.add_replicas(rucio_server.rse, [{**replica, "adler32": checksum}])
    assert list(client.list_replicas([{"scope": SCOPE, "name": replica["name"]}])) == []


def test_replica_without_checksum_or_size(rucio_server: RucioServer, client: Any) -> None:
    from rucio.common.exception import RucioException

    name = f"nosum.{uuid.uuid4().hex}.stf"
    assert client.add_replicas(rucio_server.rse, [{"scope": SCOPE, "name": name, "bytes": 7}])
    assert client.get_metadata(SCOPE, name)["adler32"] is None
    with pytest.raises(RucioException) as caught:
        client.add_replicas(
            rucio_server.rse,
            [{"scope": SCOPE, "name": f"nosize.{uuid.uuid4().hex}", "adler32": "00000001"}],
        )
    assert type(caught.value) is RucioException  # the server answers 500, nothing more precise


def test_batches_of_500(rucio_server: RucioServer, client: Any, dataset: str) -> None:
    batch = files(dataset, 500)
    client.add_replicas(rucio_server.rse, batch)
    client.attach_dids(SCOPE, dataset, dids(batch))
    assert sum(1 for _ in client.list_files(SCOPE, dataset)) == 500


def test_stop_and_restart_keep_the_instance(tmp_path: Path, rucio_server: RucioServer) -> None:
    """A second instance next to the session one; a restart keeps port, password and data."""
    from servers import start_rucio_server

    server = start_rucio_server(tmp_path / "second")
    try:
        assert server.host != rucio_server.host
        assert server.password != rucio_server.password
        client = server.client()
        client.add_dataset(SCOPE, "swf.restart.run")
        host, password = server.host, server.password
        status = subprocess.run(
            ["bash", str(RUCIO_SH), "status", str(server.directory)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0 and f"running pid {server.pid}" in status.stdout

        server.restart()
        assert (server.host, server.password) == (host, password)
        assert server.client().get_did(SCOPE, "swf.restart.run")["type"] == "DATASET"
    finally:
        server.stop()
    status = subprocess.run(
        ["bash", str(RUCIO_SH), "status", str(server.directory)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status.returncode == 3
    assert not _alive(server.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] not in ("Z", "X")
    except FileNotFoundError:
        return False
