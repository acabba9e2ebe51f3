"""The embedded catalog behaves like Rucio (notes/rucio-local-server.md), as library and adapter."""

from __future__ import annotations

import pytest

from agents.base import Command
from agents.ddm import DdmError, replica_problem
from agents.ddm.local import LocalCatalog

SCOPE = "group.daq"
DS = "swf.100.run"


def stf(seq: int, size: int | None = 1000, checksum: str | None = "0a1b2c3d") -> dict:
    return {"name": f"swf.100.{seq:06d}.stf", "size_bytes": size, "checksum": checksum,
            "file_url": f"file:///data/swf.100.{seq:06d}.stf"}


@pytest.fixture
def catalog(tmp_path) -> LocalCatalog:
    return LocalCatalog(tmp_path / "ddm")


def run(catalog: LocalCatalog, action: str, reply: dict | None = None, **params) -> dict:
    return catalog.execute(Command("ddm", action, params, reply=dict(reply or {"msg_id": "m"})))


def kind_of(call) -> str:
    with pytest.raises(DdmError) as caught:
        call()
    return caught.value.kind


def test_dataset_lifecycle_with_metadata_and_contents(catalog):
    catalog.add_dataset(SCOPE, DS, {"run_number": 100})
    assert catalog.attach(SCOPE, DS, [stf(1), stf(2)]) == ["swf.100.000001.stf",
                                                           "swf.100.000002.stf"]
    info = catalog.get_dataset(SCOPE, DS)
    assert info["is_open"] and info["metadata"] == {"run_number": 100}
    assert (info["file_count"], info["size_bytes"]) == (2, 2000)
    assert catalog.close(SCOPE, DS) == (2, 2000)
    assert not catalog.get_dataset(SCOPE, DS)["is_open"]
    assert [f["name"] for f in catalog.list_files(SCOPE, DS)] == ["swf.100.000001.stf",
                                                                  "swf.100.000002.stf"]


def test_add_dataset_twice_is_data_identifier_already_exists(catalog):
    catalog.add_dataset(SCOPE, DS)
    with pytest.raises(DdmError, match=r"^DataIdentifierAlreadyExists: .*group.daq:swf.100.run"):
        catalog.add_dataset(SCOPE, DS)


def test_attach_to_closed_dataset_is_unsupported_operation(catalog):
    catalog.add_dataset(SCOPE, DS)
    catalog.close(SCOPE, DS)
    with pytest.raises(DdmError, match=r"^UnsupportedOperation: .* is closed"):
        catalog.attach(SCOPE, DS, [stf(1)])
    assert catalog.list_files(SCOPE, DS) == []


def test_closing_a_closed_dataset_is_unsupported_operation(catalog):
    catalog.add_dataset(SCOPE, DS)
    catalog.close(SCOPE, DS)
    with pytest.raises(DdmError, match="cannot be changed"):
        catalog.close(SCOPE, DS)


def test_unknown_dataset_is_data_identifier_not_found(catalog):
    assert kind_of(lambda: catalog.attach(SCOPE, DS, [stf(1)])) == "DataIdentifierNotFound"
    assert kind_of(lambda: catalog.close(SCOPE, DS)) == "DataIdentifierNotFound"


@pytest.mark.parametrize(("checksum", "field"), [
    (None, "adler32"), ("", "adler32"), ("0a1b2c3", "adler32"), ("0a1b2c3g", "adler32"),
    ("ad:0a1b2c3d", "adler32"), ("0a1b2c3d0", "adler32")])
def test_replica_needs_an_8_hex_digit_adler32(catalog, checksum, field):
    catalog.add_dataset(SCOPE, DS)
    with pytest.raises(DdmError, match=f"^InvalidObject: .*{field}"):
        catalog.attach(SCOPE, DS, [stf(1, checksum=checksum)])
    assert catalog.list_files(SCOPE, DS) == []  # nothing half-registered


@pytest.mark.parametrize("size", [None, -1, 1.5, "10", True])
def test_replica_needs_a_non_negative_integer_size(catalog, size):
    catalog.add_dataset(SCOPE, DS)
    with pytest.raises(DdmError, match="^InvalidObject: .*bytes"):
        catalog.attach(SCOPE, DS, [stf(1, size=size)])


@pytest.mark.parametrize("size", [0, 1 << 30, 1 << 40])
def test_zero_and_huge_sizes_are_accepted(catalog, size):
    catalog.add_dataset(SCOPE, DS)
    catalog.attach(SCOPE, DS, [stf(1, size=size)])
    assert catalog.close(SCOPE, DS) == (1, size)


def test_uppercase_checksum_is_accepted_and_kept(catalog):
    catalog.add_dataset(SCOPE, DS)
    catalog.attach(SCOPE, DS, [stf(1, checksum="0A1B2C3D")])
    assert catalog.list_files(SCOPE, DS)[0]["adler32"] == "0A1B2C3D"


def test_existing_replica_keeps_original_size_and_checksum(catalog):
    catalog.add_replicas("DAQ_DISK", SCOPE, [{"name": "f.stf", "bytes": 10, "adler32": "00000001"}])
    catalog.add_replicas("DAQ_DISK", SCOPE, [{"name": "f.stf", "bytes": 99, "adler32": "ffffffff"}])
    assert catalog.list_replicas(SCOPE, "f.stf") == [
        {"rse": "DAQ_DISK", "bytes": 10, "adler32": "00000001", "pfn": None}]


def test_file_attached_twice_is_file_already_exists_unless_ignored(catalog):
    catalog.add_dataset(SCOPE, DS)
    catalog.attach(SCOPE, DS, [stf(1)])
    assert kind_of(lambda: catalog.attach(SCOPE, DS, [stf(1)])) == "FileAlreadyExists"
    assert catalog.attach(SCOPE, DS, [stf(1), stf(2)], ignore_duplicate=True) == [
        "swf.100.000002.stf"]
    assert catalog.get_dataset(SCOPE, DS)["file_count"] == 2


@pytest.mark.parametrize(("scope", "name"), [
    ("group daq", DS), ("g" * 26, DS), ("", DS), (SCOPE, ".hidden"), (SCOPE, "a b"),
    (SCOPE, "x" * 251), (SCOPE, "")])
def test_scope_and_name_rules(catalog, scope, name):
    with pytest.raises(DdmError, match="^InvalidObject: "):
        catalog.add_dataset(scope, name)


def test_longest_legal_scope_and_name(catalog):
    catalog.add_dataset("s" * 25, "n" * 250)
    assert catalog.get_dataset("s" * 25, "n" * 250)["is_open"]


def test_at_most_1000_files_per_call(catalog):
    catalog.add_dataset(SCOPE, DS)
    with pytest.raises(DdmError, match="at most 1000"):
        catalog.attach(SCOPE, DS, [stf(i) for i in range(1001)])
    assert len(catalog.attach(SCOPE, DS, [stf(i) for i in range(1000)])) == 1000


def test_set_metadata_takes_did_columns_only(catalog):
    catalog.add_dataset(SCOPE, DS)
    catalog.set_metadata(SCOPE, DS, "run_number", 100)
    catalog.set_metadata(SCOPE, DS, "datatype", "stf")
    assert catalog.get_dataset(SCOPE, DS)["metadata"] == {"run_number": 100, "datatype": "stf"}
    assert kind_of(lambda: catalog.set_metadata(SCOPE, DS, "color", "red")) == "InvalidMetadata"
    assert kind_of(lambda: catalog.set_metadata(SCOPE, DS, "run_number", "x")) == \
        "InvalidMetadata"
    assert kind_of(lambda: catalog.set_metadata(SCOPE, "nope", "run_number", 1)) == \
        "DataIdentifierNotFound"


def test_catalog_persists_across_instances(tmp_path):
    first = LocalCatalog(tmp_path / "ddm")
    first.add_dataset(SCOPE, DS, {"run_number": 100})
    first.attach(SCOPE, DS, [stf(1)])
    first.close_connection()
    second = LocalCatalog(tmp_path / "ddm")
    assert second.get_dataset(SCOPE, DS)["file_count"] == 1
    assert kind_of(lambda: second.add_dataset(SCOPE, DS)) == "DataIdentifierAlreadyExists"


def test_replica_problem_names_the_field():
    assert "adler32" in replica_problem({"name": "f", "bytes": 1, "adler32": None})
    assert "null size" in replica_problem({"name": "f", "bytes": None, "adler32": "00000000"})
    assert replica_problem({"name": "f", "bytes": 0, "adler32": "00000000"}) is None


# --- the Adapter contract: execute() fills the reply, never raises for refusals --------------

def test_execute_add_dataset_ok_then_exists_with_state(catalog):
    template = {"msg_id": "r1", "msg_type": "dataset_opened", "scope": SCOPE, "dataset": DS}
    reply = run(catalog, "add_dataset", template, scope=SCOPE, name=DS,
                metadata={"run_number": 100})
    assert reply == {**template, "outcome": "ok", "error": None, "is_open": True}
    again = run(catalog, "add_dataset", template, scope=SCOPE, name=DS)
    assert again["outcome"] == "exists" and again["is_open"] is True
    assert again["error"].startswith("DataIdentifierAlreadyExists: ")
    catalog.close(SCOPE, DS)
    closed = run(catalog, "add_dataset", template, scope=SCOPE, name=DS)
    assert (closed["outcome"], closed["is_open"]) == ("exists", False)


def test_execute_attach_close_and_list(catalog):
    run(catalog, "add_dataset", scope=SCOPE, name=DS)
    assert run(catalog, "attach", scope=SCOPE, dataset=DS, files=[stf(1)])["outcome"] == "ok"
    bad = run(catalog, "attach", scope=SCOPE, dataset=DS, files=[stf(2, checksum=None)])
    assert bad["outcome"] == "error" and "adler32 is missing" in bad["error"]
    dup = run(catalog, "attach", scope=SCOPE, dataset=DS, files=[stf(1)])
    assert dup["outcome"] == "error" and dup["error"].startswith("FileAlreadyExists")
    ignored = run(catalog, "attach", scope=SCOPE, dataset=DS, files=[stf(1)],
                  ignore_duplicate=True)
    assert ignored["outcome"] == "duplicate" and "already attached" in ignored["reason"]
    listed = run(catalog, "list_files", scope=SCOPE, dataset=DS)
    assert (listed["file_count"], listed["size_bytes"]) == (1, 1000)
    closed = run(catalog, "close", scope=SCOPE, dataset=DS)
    assert (closed["outcome"], closed["file_count"], closed["size_bytes"]) == ("ok", 1, 1000)
    late = run(catalog, "attach", scope=SCOPE, dataset=DS, files=[stf(3)])
    assert late["outcome"] == "error" and late["error"].startswith("UnsupportedOperation")
    twice = run(catalog, "close", scope=SCOPE, dataset=DS)
    assert twice["outcome"] == "error" and "cannot be changed" in twice["error"]


def test_execute_never_raises_on_bad_input(catalog):
    assert run(catalog, "teleport")["error"].startswith("UnsupportedOperation")
    assert run(catalog, "attach", scope=SCOPE, dataset=DS, files="nope")["outcome"] == "error"
    assert run(catalog, "attach", scope=SCOPE, dataset=DS, files=[42])["outcome"] == "error"
    assert run(catalog, "close", scope=None, dataset=DS)["outcome"] == "error"
    reply = run(catalog, "add_dataset", scope=SCOPE, name=DS, metadata={"color": "red"})
    assert reply["error"].startswith("InvalidMetadata")
