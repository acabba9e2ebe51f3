"""The Rucio ``ddm`` adapter (agents/ddm/rucio.py) against a real Rucio server.

The server is the session's ``rucio_server`` (deploy/rucio/server.sh); every test works in a
scope of its own, so run numbers and file names may repeat across tests. What is checked on the
server is read back with an independent admin client.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prompt_runs import Injector, closed_port, messages, only, prompt_config, runtime

from agents.base import Command
from agents.ddm.rucio import BATCH_SIZE, RucioCatalog, RucioSettings
from swf.settings import load_settings

if TYPE_CHECKING:
    from servers import RucioServer

pytest_plugins = ["servers"]  # the rucio_server fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the first run installs the server


@pytest.fixture(scope="module")
def admin(rucio_server: RucioServer) -> Any:
    return rucio_server.client()


@pytest.fixture
def scope(admin: Any) -> str:
    name = f"t.{uuid.uuid4().hex[:12]}"
    admin.add_scope("root", name)
    return name


@pytest.fixture
def settings(rucio_server: RucioServer) -> RucioSettings:
    return RucioSettings().for_workflow({"rucio_config": str(rucio_server.config_file),
                                         "retry_delay": 0})


@pytest.fixture
def catalog(settings: RucioSettings) -> Iterator[RucioCatalog]:
    adapter = RucioCatalog(settings)
    yield adapter
    adapter.close_connection()


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Any]:
    from eventstore.store import EventStore

    with EventStore(sqlite_url) as opened:
        yield opened


def ddm(adapter: RucioCatalog, action: str, **params: Any) -> dict[str, Any]:
    reply = adapter.execute(Command("ddm", action, params, reply={"msg_id": "test"}))
    assert reply["msg_id"] == "test"
    return reply


def stf(name: str, size: int = 1000, checksum: str = "0a1b2c3d") -> dict[str, Any]:
    return {"name": name, "size_bytes": size, "checksum": checksum,
            "file_url": f"file:///data/{name}"}


def rucio_workflow(rucio_server: RucioServer, scope: str, *overrides: str) -> Any:
    return prompt_config("ddm.backend=rucio", f"ddm.rucio_config={rucio_server.config_file}",
                         f"processing.scope={scope}", *overrides, ddm={"retry_delay": 0})


def listed(admin: Any, scope: str, dataset: str) -> list[tuple[str, int, str]]:
    return sorted((f["name"], f["bytes"], f["adler32"]) for f in admin.list_files(scope, dataset))


def replicas(admin: Any, scope: str, name: str) -> list[dict[str, Any]]:
    return list(admin.list_replicas([{"scope": scope, "name": name}]))


# --- whole runs: the processing agent with the Rucio adapter ------------------------------------


def test_five_file_run_gives_a_closed_dataset_with_the_files(
        rucio_server: RucioServer, admin: Any, scope: str, store: Any, tmp_path: Path) -> None:
    run = runtime(store, tmp_path / "data", rucio_workflow(rucio_server, scope))
    assert run.run().errors == 0
    dataset = f"swf.{run.run_id}.run"
    ready = messages(store, msg_type="stf_ready")
    assert len(ready) == 5
    assert [m["outcome"] for m in messages(store, msg_type="file_attached")] == ["ok"] * 5
    closed = only(messages(store, msg_type="dataset_closed"))
    assert (closed["outcome"], closed["file_count"], closed["size_bytes"]) == (
        "ok", 5, sum(m["size_bytes"] for m in ready))
    assert only(messages(store, msg_type="run_processed"))["status"] == "completed"
    # on the server: closed, the run number as metadata, exactly the announced files
    assert admin.get_did(scope, dataset)["open"] is False
    assert admin.get_metadata(scope, dataset)["run_number"] == run.run_id
    assert listed(admin, scope, dataset) == sorted(
        (m["filename"], m["size_bytes"], m["checksum"]) for m in ready)
    (replica,) = replicas(admin, scope, ready[0]["filename"])
    assert list(replica["rses"]) == [rucio_server.rse]


def test_seed_error_cases_are_recorded_and_not_registered(
        rucio_server: RucioServer, admin: Any, scope: str, store: Any, tmp_path: Path) -> None:
    run = runtime(store, tmp_path / "data", rucio_workflow(rucio_server, scope),
                  agent_types=["processing"])
    inject = Injector(run, run=4242)
    inject.imminent()
    inject.stf(1, 1)
    inject.stf(2, 2, checksum="")  # missing checksum
    inject.stf(3, 3, size=None)  # null size
    inject.stf(4, 4, size=0)
    inject.end(5, 4)
    assert run.run().errors == 0
    outcomes = {m["name"]: (m["outcome"], m["error"])
                for m in messages(store, msg_type="file_attached")}
    assert outcomes[inject.name(1)] == ("ok", None)
    assert outcomes[inject.name(4)] == ("ok", None)
    assert "adler32 is missing (empty checksum)" in outcomes[inject.name(2)][1]
    assert "bytes is missing (null size)" in outcomes[inject.name(3)][1]
    closed = only(messages(store, msg_type="dataset_closed"))
    assert (closed["outcome"], closed["file_count"], closed["size_bytes"]) == ("ok", 2, 4096)
    assert only(messages(store, msg_type="run_processed"))["status"] == "completed"
    assert listed(admin, scope, "swf.4242.run") == [(inject.name(1), 4096, "1a2b3c4d"),
                                                    (inject.name(4), 0, "1a2b3c4d")]
    assert replicas(admin, scope, inject.name(2)) == replicas(admin, scope, inject.name(3)) == []


def test_second_run_of_the_same_run_number_does_not_double_register(
        rucio_server: RucioServer, admin: Any, scope: str, sqlite_url: str,
        tmp_path: Path) -> None:
    from eventstore.store import EventStore

    config = rucio_workflow(rucio_server, scope)
    with EventStore(sqlite_url) as first:
        run = runtime(first, tmp_path / "one", config)
        run.run()
    dataset = f"swf.{run.run_id}.run"
    before = listed(admin, scope, dataset)
    assert len(before) == 5
    with EventStore(f"{sqlite_url}.second") as second:  # a fresh store: the same run number
        again = runtime(second, tmp_path / "two", config)
        assert again.run_id == run.run_id
        assert again.run().errors == 0
        opened = only(messages(second, msg_type="dataset_opened"))
        assert (opened["outcome"], opened["is_open"], opened["file_count"]) == ("exists", False, 5)
        assert opened["error"] == (f"DataIdentifierAlreadyExists: data identifier "
                                   f"'{scope}:{dataset}' already exists")
        attached = messages(second, msg_type="file_attached")
        assert len(attached) == 5
        assert all(m["outcome"] == "error" and m["error"] ==
                   f"UnsupportedOperation: Data identifier '{scope}:{dataset}' is closed"
                   for m in attached)
        done = only(messages(second, msg_type="run_processed"))
        assert done["status"] == "failed" and "cannot be changed" in done["error"]
        assert messages(second, msg_type="panda_task_submitted") == []
    assert listed(admin, scope, dataset) == before
    assert admin.get_did(scope, dataset)["length"] == 5
    assert all(len(replicas(admin, scope, name)) == 1 for name, _, _ in before)


def test_unreachable_rucio_fails_the_run_with_a_reason(
        scope: str, store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    password = tmp_path / "password"
    password.write_text("irrelevant\n")
    monkeypatch.delenv("RUCIO_CONFIG", raising=False)
    for name, value in {"RUCIO_HOST": f"http://127.0.0.1:{port}", "RUCIO_ACCOUNT": "root",
                        "RUCIO_AUTH_TYPE": "userpass", "RUCIO_USERNAME": "root",
                        "RUCIO_PASSWORD_FILE": str(password)}.items():
        monkeypatch.setenv(name, value)
    config = prompt_config("ddm.backend=rucio", f"processing.scope={scope}",
                           ddm={"retry_delay": 0, "attempts": 3})
    run = runtime(store, tmp_path / "data", config)
    assert run.run().errors == 0  # strict runtime: no agent or adapter exception either
    opened = only(messages(store, msg_type="dataset_opened"))
    assert opened["outcome"] == "error"
    assert opened["error"] == (f"unreachable: Rucio server http://127.0.0.1:{port}: Cannot "
                               f"connect to the Rucio server (after 3 attempts)")
    assert {m["outcome"] for m in messages(store, msg_type="file_attached")} == {"error"}
    done = only(messages(store, msg_type="run_processed"))
    assert done["status"] == "failed"
    assert done["error"].startswith(f"dataset {scope}:swf.{run.run_id}.run could not be opened: "
                                    f"unreachable: Rucio server")
    retries = [m["message"] for m in messages(store, msg_type="agent_log")
               if m["level"] == "WARNING" and "retrying" in m["message"]]
    assert len(retries) == 2
    # the agent kept running to the end of the execution
    assert messages(store, msg_type="agent_heartbeat")[-1]["operational_state"] == "EXITED"


# --- the adapter, command by command ----------------------------------------------------------


def test_add_dataset_twice_answers_exists(catalog: RucioCatalog, admin: Any, scope: str) -> None:
    assert ddm(catalog, "add_dataset", scope=scope, name="swf.1.run",
               metadata={"run_number": 1}) == {"msg_id": "test", "outcome": "ok", "error": None,
                                               "is_open": True}
    ddm(catalog, "attach", scope=scope, dataset="swf.1.run", files=[stf("a.stf", 7)])
    again = ddm(catalog, "add_dataset", scope=scope, name="swf.1.run")
    assert again == {"msg_id": "test", "outcome": "exists", "is_open": True, "file_count": 1,
                     "size_bytes": 7, "error": f"DataIdentifierAlreadyExists: data identifier "
                                               f"'{scope}:swf.1.run' already exists"}
    assert admin.get_metadata(scope, "swf.1.run")["run_number"] == 1


def test_metadata_key_rucio_cannot_store_creates_nothing(
        catalog: RucioCatalog, admin: Any, scope: str) -> None:
    from rucio.common.exception import DataIdentifierNotFound

    reply = ddm(catalog, "add_dataset", scope=scope, name="swf.2.run",
                metadata={"run_number": 2, "free_form": "x"})
    assert reply["outcome"] == "error"
    assert reply["error"].startswith("InvalidMetadata: No plugin manages metadata keys")
    with pytest.raises(DataIdentifierNotFound):
        admin.get_did(scope, "swf.2.run")


def test_bad_checksum_straight_to_the_adapter_is_invalid_object(
        catalog: RucioCatalog, admin: Any, scope: str) -> None:
    ddm(catalog, "add_dataset", scope=scope, name="swf.3.run")
    reply = ddm(catalog, "attach", scope=scope, dataset="swf.3.run",
                files=[stf("bad.stf", checksum="xyz")])
    assert reply["outcome"] == "error"
    assert reply["error"].startswith("InvalidObject: invalid adler32 'xyz' (Rucio: ")
    assert replicas(admin, scope, "bad.stf") == []
    assert listed(admin, scope, "swf.3.run") == []


def test_attach_to_a_closed_dataset_is_refused_and_registers_nothing(
        catalog: RucioCatalog, admin: Any, scope: str) -> None:
    ddm(catalog, "add_dataset", scope=scope, name="swf.4.run")
    ddm(catalog, "attach", scope=scope, dataset="swf.4.run", files=[stf("first.stf", 10)])
    closed = ddm(catalog, "close", scope=scope, dataset="swf.4.run")
    assert (closed["outcome"], closed["file_count"], closed["size_bytes"]) == ("ok", 1, 10)
    late = ddm(catalog, "attach", scope=scope, dataset="swf.4.run", files=[stf("late.stf")])
    assert late["outcome"] == "error"
    assert late["error"] == f"UnsupportedOperation: Data identifier '{scope}:swf.4.run' is closed"
    assert replicas(admin, scope, "late.stf") == []
    again = ddm(catalog, "close", scope=scope, dataset="swf.4.run")
    assert again["error"] == (f"UnsupportedOperation: The status of the data identifier "
                              f"'{scope}:swf.4.run' cannot be changed")


def test_retried_run_with_an_open_dataset_attaches_only_new_files(
        catalog: RucioCatalog, admin: Any, scope: str) -> None:
    ddm(catalog, "add_dataset", scope=scope, name="swf.5.run")
    ddm(catalog, "attach", scope=scope, dataset="swf.5.run", files=[stf("f1.stf"), stf("f2.stf")])
    plain = ddm(catalog, "attach", scope=scope, dataset="swf.5.run", files=[stf("f1.stf")])
    assert plain["error"] == (f"FileAlreadyExists: a file of this call is already attached to "
                              f"'{scope}:swf.5.run'")
    reused = dict(scope=scope, dataset="swf.5.run", ignore_duplicate=True)
    mixed = ddm(catalog, "attach", **reused, files=[stf("f1.stf"), stf("f2.stf"), stf("f3.stf")])
    assert (mixed["outcome"], mixed["attached"]) == ("ok", 1)
    duplicate = ddm(catalog, "attach", **reused, files=[stf("f2.stf", size=1)])
    assert (duplicate["outcome"], duplicate["attached"]) == ("duplicate", 0)
    assert "already attached" in duplicate["reason"]
    assert [name for name, _, _ in listed(admin, scope, "swf.5.run")] == [
        "f1.stf", "f2.stf", "f3.stf"]
    assert admin.get_metadata(scope, "f2.stf")["bytes"] == 1000  # the original size is kept


def test_list_files_and_set_metadata(catalog: RucioCatalog, admin: Any, scope: str) -> None:
    ddm(catalog, "add_dataset", scope=scope, name="swf.6.run")
    ddm(catalog, "attach", scope=scope, dataset="swf.6.run",
        files=[stf("b.stf", 2, "0000000b"), stf("a.stf", 1, "0000000a")])
    reply = ddm(catalog, "list_files", scope=scope, dataset="swf.6.run")
    assert reply["files"] == [
        {"scope": scope, "name": "a.stf", "bytes": 1, "adler32": "0000000a"},
        {"scope": scope, "name": "b.stf", "bytes": 2, "adler32": "0000000b"}]
    assert (reply["file_count"], reply["size_bytes"]) == (2, 3)
    assert ddm(catalog, "set_metadata", scope=scope, name="swf.6.run", key="run_number",
               value=6)["outcome"] == "ok"
    assert admin.get_metadata(scope, "swf.6.run")["run_number"] == 6
    missing = ddm(catalog, "list_files", scope=scope, dataset="nope")
    assert missing["error"].startswith("DataIdentifierNotFound: ")


def test_attach_is_sent_in_batches_of_500(settings: RucioSettings, admin: Any,
                                          scope: str) -> None:
    calls = Recorder()
    adapter = calls.catalog(settings)
    ddm(adapter, "add_dataset", scope=scope, name="swf.7.run")
    files = [stf(f"f{i:04d}.stf", i, f"{i:08x}") for i in range(BATCH_SIZE + 1)]
    reply = ddm(adapter, "attach", scope=scope, dataset="swf.7.run", files=files)
    assert (reply["outcome"], reply["attached"]) == ("ok", BATCH_SIZE + 1)
    assert calls.sizes("attach_dids") == [BATCH_SIZE, 1]
    assert len(listed(admin, scope, "swf.7.run")) == BATCH_SIZE + 1


def test_lost_answers_are_retried_without_double_registration(
        settings: RucioSettings, admin: Any, scope: str) -> None:
    """The server did the work but the answer was lost (a connection error after the call):
    the retry notices instead of registering twice or reporting a refusal."""
    delays: list[float] = []
    calls = Recorder(lose={"add_dataset": 1, "attach_dids": 1, "set_status": 1})
    adapter = calls.catalog(dataclasses.replace(settings, retry_delay=0.25), sleep=delays.append)
    opened = ddm(adapter, "add_dataset", scope=scope, name="swf.8.run")
    # created by the call whose answer was lost: Rucio now says it exists, and it is open
    assert (opened["outcome"], opened["is_open"]) == ("exists", True)
    attached = ddm(adapter, "attach", scope=scope, dataset="swf.8.run",
                   files=[stf("x.stf"), stf("y.stf")])
    assert (attached["outcome"], attached["attached"]) == ("ok", 2)
    closed = ddm(adapter, "close", scope=scope, dataset="swf.8.run")
    assert (closed["outcome"], closed["file_count"]) == ("ok", 2)
    assert calls.sizes("attach_dids") == [2]  # not sent again after the lost answer
    assert [name for name, _, _ in calls.calls].count("set_status") == 1
    assert delays == [0.25, 0.25, 0.25]
    assert len(listed(admin, scope, "swf.8.run")) == 2
    assert admin.get_did(scope, "swf.8.run")["open"] is False


def test_backoff_doubles_and_is_bounded(settings: RucioSettings) -> None:
    delays: list[float] = []
    down = dataclasses.replace(settings, host=f"http://127.0.0.1:{closed_port()}",
                               auth_host=None, attempts=5, retry_delay=0.25, max_delay=0.6)
    reply = ddm(RucioCatalog(down, sleep=delays.append), "close", scope="s", dataset="d")
    assert reply["error"].startswith(f"unreachable: Rucio server {down.host}: ")
    assert reply["error"].endswith("(after 5 attempts)")
    assert delays == [0.25, 0.5, 0.6, 0.6]


def test_wrong_password_is_an_authentication_failure(
        settings: RucioSettings, catalog: RucioCatalog, scope: str) -> None:
    # a good client first, so a token for root exists: it must not be shared with the bad one
    assert ddm(catalog, "add_dataset", scope=scope, name="swf.9.run")["outcome"] == "ok"
    wrong = "not-the-password-" + uuid.uuid4().hex
    bad = RucioCatalog(dataclasses.replace(settings, password=wrong))
    reply = ddm(bad, "add_dataset", scope=scope, name="swf.10.run")
    assert reply["outcome"] == "error"
    assert reply["error"].startswith(f"authentication failed: Rucio server {settings.host} "
                                     f"refused account 'root'")
    assert wrong not in reply["error"] and settings.password not in reply["error"]
    assert "password" not in repr(settings).lower().replace("password=", "")


def test_settings_from_the_environment(rucio_server: RucioServer, scope: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUCIO_CONFIG", raising=False)
    env = {key: value for key, value in rucio_server.env().items() if key.startswith("RUCIO_")}
    settings = load_settings(environ=env).rucio_settings()
    assert (settings.host, settings.account, settings.problem) == (rucio_server.host, "root", None)
    assert settings.password == rucio_server.password  # from RUCIO_PASSWORD_FILE
    reply = ddm(RucioCatalog(settings), "add_dataset", scope=scope, name="swf.11.run")
    assert reply["outcome"] == "ok"


# --- settings, without a server ---------------------------------------------------------------


def test_an_explicit_config_file_wins_over_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "rucio.cfg"
    config.write_text("[client]\nrucio_host = http://file:1\naccount = filed\n"
                      "auth_type = userpass\nusername = u\npassword = secret\n")
    env = {"RUCIO_HOST": "http://env:2", "RUCIO_ACCOUNT": "envacct", "RUCIO_CONFIG": "/nope"}
    explicit = load_settings(environ=env).rucio_settings().for_workflow(
        {"rucio_config": str(config), "rse": "OTHER"})
    assert (explicit.host, explicit.account, explicit.rse) == ("http://file:1", "filed", "OTHER")
    assert explicit.client_options()["creds"] == {"username": "u", "password": "secret"}
    assert "secret" not in repr(explicit)
    layered = load_settings(environ={**env, "RUCIO_CONFIG": str(config)}).rucio_settings()
    assert (layered.host, layered.account, layered.username) == ("http://env:2", "envacct", "u")


@pytest.mark.parametrize(("section", "env", "expected"), [
    ({"rucio_config": "/no/such/rucio.cfg"}, {}, "configuration error: cannot read Rucio config "
                                                 "/no/such/rucio.cfg"),
    ({}, {}, "configuration error: no Rucio host"),
    ({}, {"RUCIO_HOST": "http://127.0.0.1:1", "RUCIO_AUTH_TYPE": "userpass"},
     "configuration error: userpass authentication needs a username and a password"),
])
def test_configuration_problems_are_replies(section: dict, env: dict, expected: str) -> None:
    settings = load_settings(environ=env).rucio_settings().for_workflow(section)
    reply = ddm(RucioCatalog(settings), "add_dataset",
                scope="group.daq", name="swf.1.run")
    assert reply["outcome"] == "error" and reply["error"].startswith(expected)


def test_unknown_action_and_malformed_params_are_replies() -> None:
    adapter = RucioCatalog(RucioSettings(host="http://127.0.0.1:1"))
    assert ddm(adapter, "rename")["error"] == "UnsupportedOperation: unknown ddm action 'rename'"
    adapter._client = object()  # never reached: the parameters are refused first
    assert ddm(adapter, "attach", scope="s", dataset="d", files="x")["error"] == (
        "InvalidObject: files must be a list, got 'x'")
    assert ddm(adapter, "close", scope="bad scope!", dataset="d")["error"].startswith(
        "InvalidObject: scope 'bad scope!' does not match")


class Recorder:
    """Catalogs whose real clients are wrapped: the calls are recorded, and the answer of the
    first N calls of a method is "lost" (the call reaches the server, then a connection error is
    raised, as when a reply never arrives)."""

    def __init__(self, lose: dict[str, int] | None = None) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.lose = dict(lose or {})

    def catalog(self, settings: RucioSettings, **options: Any) -> RucioCatalog:
        recorder = self

        class Recorded(RucioCatalog):
            def _new_client(self) -> Any:
                return recorder.wrap(super()._new_client())

        return Recorded(settings, **options)

    def wrap(self, client: Any) -> Any:
        recorder = self

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                method = getattr(client, name)
                if not callable(method):
                    return method

                def call(*args: Any, **kwargs: Any) -> Any:
                    from rucio.common.exception import ServerConnectionException

                    recorder.calls.append((name, args, kwargs))
                    result = method(*args, **kwargs)
                    if recorder.lose.get(name):
                        recorder.lose[name] -= 1
                        raise ServerConnectionException()
                    return result
                return call

        return Proxy()

    def sizes(self, name: str) -> list[int]:
        return [len(args[2]) for method, args, _ in self.calls if method == name]
