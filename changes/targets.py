"""Which hosts a change targets: picked host ids and/or a small filter language.

Filter grammar (strict; every error names what is wrong)::

    filter := term ( "and" term )*
    term   := key "=" value
    key    := label | name | driver | vendor_device | os | cpu_vendor
    value  := [A-Za-z0-9_.:/*-]+          (name accepts * as a wildcard)

Example: ``label=rack-12 and driver=igb`` → hosts with the label rack-12 that have a present NIC
driven by igb. Terms are ANDed; host ids and the filter are combined as a union. The resolved host
ids are frozen into the plan (PlanItem rows), so hosts that match later do not join the change.
"""

import re

from django.db.models import Exists, OuterRef, Q

from hosts.models import Hypervisor, Nic

FILTER_KEYS = ("label", "name", "driver", "vendor_device", "os", "cpu_vendor")
VALUE_RE = re.compile(r"^[A-Za-z0-9_.:/*-]{1,100}$")
VENDOR_DEVICE_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$")
MAX_HOST_IDS = 5000


class TargetError(ValueError):
    """A target that cannot be resolved; the message is for people."""


def parse_filter(text: str) -> list[tuple[str, str]]:
    text = (text or "").strip()
    if not text:
        return []
    tokens = text.split()
    terms = []
    position = 0
    while True:
        position += 1
        if not tokens:
            raise TargetError(f"term {position} is missing after 'and' (write key=value and key=value)")
        raw = tokens.pop(0)
        if raw.count("=") != 1:
            raise TargetError(f"term {position} ({raw!r}) must be key=value")
        key, value = raw.split("=")
        key = key.lower()
        if key not in FILTER_KEYS:
            raise TargetError(f"unknown key {key!r} in term {position}; use one of {', '.join(FILTER_KEYS)}")
        if not VALUE_RE.match(value):
            raise TargetError(
                f"value {value!r} of {key} is not allowed (letters, digits and _.:/*- only, at most 100)"
            )
        if "*" in value and key != "name":
            raise TargetError(f"the wildcard * is only allowed in name=, not in {key}=")
        if key == "vendor_device" and not VENDOR_DEVICE_RE.match(value):
            raise TargetError(f"vendor_device must look like 8086:1521, not {value!r}")
        terms.append((key, value))
        if not tokens:
            return terms
        joiner = tokens.pop(0)
        if joiner.lower() != "and":
            raise TargetError(
                f"expected 'and' after term {position}, found {joiner!r} (only 'and' is supported)"
            )


def _term_q(key: str, value: str) -> Q:
    if key == "label":
        return Q(labels__name=value)
    if key == "name":
        if "*" in value:
            pattern = "^" + ".*".join(re.escape(part) for part in value.split("*")) + "$"
            return Q(name__regex=pattern)
        return Q(name=value)
    if key == "os":
        return Q(os_id__iexact=value)
    if key == "cpu_vendor":
        return Q(cpu_vendor__iexact=value)
    nics = Nic.objects.filter(host=OuterRef("pk"), present=True)
    if key == "driver":
        return Q(Exists(nics.filter(driver=value)))
    vendor, device = value.lower().split(":")
    return Q(Exists(nics.filter(vendor_id__iexact=vendor, device_id__iexact=device)))


def validate_targets(targets) -> dict:
    """Normalise {"host_ids": [...], "filter": "..."}; raise TargetError on anything else."""
    if not isinstance(targets, dict):
        raise TargetError("targets must be an object with host_ids and/or filter")
    unknown = set(targets) - {"host_ids", "filter"}
    if unknown:
        raise TargetError(f"unknown target keys: {', '.join(sorted(unknown))}")
    host_ids = targets.get("host_ids") or []
    if not isinstance(host_ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in host_ids
    ):
        raise TargetError("host_ids must be a list of host ids")
    if len(host_ids) > MAX_HOST_IDS:
        raise TargetError(f"at most {MAX_HOST_IDS} hosts per change")
    text = targets.get("filter") or ""
    if not isinstance(text, str):
        raise TargetError("filter must be text")
    parse_filter(text)
    if not host_ids and not text.strip():
        raise TargetError("pick at least one host or give a filter")
    normal = {}
    if host_ids:
        normal["host_ids"] = sorted(set(host_ids))
    if text.strip():
        normal["filter"] = " and ".join(f"{k}={v}" for k, v in parse_filter(text))
    return normal


def resolve_targets(targets: dict) -> list[Hypervisor]:
    """The targeted hosts, ordered by name; unknown host ids are an error."""
    targets = validate_targets(targets)
    host_ids = targets.get("host_ids", [])
    query = Q(pk__in=host_ids) if host_ids else Q(pk__in=[])
    terms = parse_filter(targets.get("filter", ""))
    if terms:
        filtered = Q()
        for key, value in terms:
            filtered &= Q(pk__in=Hypervisor.objects.filter(_term_q(key, value)).values("pk"))
        query |= filtered
    hosts = list(Hypervisor.objects.filter(query).order_by("name"))
    if host_ids:
        missing = set(host_ids) - {h.pk for h in hosts}
        if missing:
            raise TargetError(f"unknown host ids: {', '.join(str(i) for i in sorted(missing))}")
    return hosts
