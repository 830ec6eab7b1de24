"""The target filter language: strict parsing, resolution to hosts, union with picked hosts."""

import re

import pytest

from changes.targets import TargetError, parse_filter, resolve_targets, validate_targets

from .conftest import make_host


def test_parse_filter_accepts_the_documented_language():
    assert parse_filter("label=rack-12 and driver=igb") == [("label", "rack-12"), ("driver", "igb")]
    assert parse_filter("  name=hv0* AND vendor_device=8086:1521 ") == [
        ("name", "hv0*"),
        ("vendor_device", "8086:1521"),
    ]
    assert parse_filter("") == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("rack=12", "unknown key 'rack'"),
        ("label", "must be key=value"),
        ("label=a=b", "must be key=value"),
        ("label=rack-12 and", "missing after 'and'"),
        ("label=rack 12", "expected 'and' after term 1"),
        ("driver=ig*", "wildcard"),
        ("vendor_device=intel", "8086:1521"),
        ("label=$(reboot)", "not allowed"),
        ("label=a or driver=igb", "only 'and' is supported"),
    ],
)
def test_parse_filter_errors_are_clear(text, message):
    with pytest.raises(TargetError, match=re.escape(message)):
        parse_filter(text)


def test_validate_targets_rejects_bad_shapes():
    with pytest.raises(TargetError, match="at least one host"):
        validate_targets({})
    with pytest.raises(TargetError, match="list of host ids"):
        validate_targets({"host_ids": ["1"]})
    with pytest.raises(TargetError, match="unknown target keys"):
        validate_targets({"hosts": [1]})
    assert validate_targets({"host_ids": [3, 1, 3], "filter": "label=x  and  driver=igb"}) == {
        "host_ids": [1, 3],
        "filter": "label=x and driver=igb",
    }


@pytest.mark.django_db
def test_resolve_targets_filter_and_union():
    a = make_host("hv-a", labels=["rack-12"], nics=[("eno49", "0000:04:00.0", 0)])
    b = make_host(
        "hv-b",
        labels=["rack-12"],
        nics=[("eno1", "0000:02:00.0", 0, {"driver": "tg3", "sriov_totalvfs": None})],
    )
    c = make_host("hv-c", labels=["rack-13"], nics=[("eno49", "0000:04:00.0", 0)])
    assert resolve_targets({"filter": "label=rack-12 and driver=igb"}) == [a]
    assert resolve_targets({"filter": "driver=igb"}) == [a, c]
    assert resolve_targets({"filter": "name=hv-*"}) == [a, b, c]
    assert resolve_targets({"host_ids": [c.pk], "filter": "label=rack-12 and driver=igb"}) == [a, c]
    assert resolve_targets({"filter": "vendor_device=8086:1521 and label=rack-13"}) == [c]
    with pytest.raises(TargetError, match="unknown host ids: 999"):
        resolve_targets({"host_ids": [999]})
