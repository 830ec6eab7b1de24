"""The host list's filter set (django-filter) and the queryset it filters.

Per-host figures (SR-IOV NICs, VFs configured / capacity) are columns of the host row, kept by
discovery, so sorting and paging never aggregate NICs; every filter on a related table is an
EXISTS: no join can multiply rows, and the list costs a constant number of queries.
"""

import django_filters
from django import forms
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q

from .models import Hypervisor, Label, Nic, VirtualFunction

YES_NO = (("yes", "Yes"), ("no", "No"))
KEY_STATES = (
    ("pending", "New key pending"),
    ("mismatch", "Key mismatch"),
    ("trusted", "Trusted"),
    ("none", "No key yet"),
)
SORTS = (
    ("name", "name"),
    ("status", "status"),
    ("kernel", "kernel"),
    ("vfs_configured", "vfs"),
    ("last_discovery_at", "discovered"),
)
PER_PAGE_CHOICES = (25, 50, 100, 200)
DEFAULT_PER_PAGE = 50

# A NIC counts as SR-IOV capable when it is present and reports a positive sriov_totalvfs.
SRIOV_NIC = Q(present=True, sriov_totalvfs__gt=0)


# A key seen and not accepted yet (a mismatch is counted on its own).
KEY_PENDING = ~Q(status=Hypervisor.Status.HOST_KEY_MISMATCH) & (
    Q(status=Hypervisor.Status.HOST_KEY_PENDING) | ~Q(pending_host_key_fingerprint="")
)


def annotated_hosts():
    """Hosts with the per-row figures the list shows and sorts on (sriov_nics, vfs_configured,
    vfs_capacity: kept on the host row, see Hypervisor)."""
    return Hypervisor.objects.prefetch_related("labels")


# The distinct drivers of present NICs by walking the (driver, host) index from one driver to the
# next ("loose index scan"): a few index probes instead of reading every NIC row.
DISTINCT_DRIVERS_SQL = """
WITH RECURSIVE drivers(driver) AS (
    (SELECT driver FROM hosts_nic WHERE present AND driver > '' ORDER BY driver LIMIT 1)
    UNION ALL
    SELECT (SELECT n.driver FROM hosts_nic n WHERE n.present AND n.driver > d.driver ORDER BY n.driver LIMIT 1)
    FROM drivers d WHERE d.driver IS NOT NULL
)
SELECT driver FROM drivers WHERE driver IS NOT NULL
"""


def driver_choices():
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(DISTINCT_DRIVERS_SQL)
            drivers = [row[0] for row in cursor.fetchall()]
    else:
        rows = Nic.objects.filter(present=True).exclude(driver="").order_by("driver")
        drivers = list(rows.values_list("driver", flat=True).distinct())
    return [(d, d) for d in drivers]


def _yes_no(queryset, condition, value):
    if value == "yes":
        return queryset.filter(condition)
    if value == "no":
        return queryset.exclude(condition)
    return queryset


def _choice(choices, method, label):
    return django_filters.ChoiceFilter(choices=choices, method=method, label=label, empty_label="any")


class HostFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="filter_q", label="Search",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "name, address, hostname"}),
    )
    label = django_filters.ModelChoiceFilter(
        queryset=Label.objects.all(), to_field_name="name", method="filter_label", empty_label="any",
        label="Label",
    )
    status = django_filters.ChoiceFilter(choices=Hypervisor.Status.choices, empty_label="any")
    driver = django_filters.ChoiceFilter(
        choices=driver_choices, method="filter_driver", empty_label="any", label="NIC driver",
    )
    sriov = _choice(YES_NO, "filter_sriov", "SR-IOV NIC")
    iommu = _choice(YES_NO, "filter_iommu", "IOMMU")
    drifted = _choice(YES_NO, "filter_drifted", "Drifted")
    key = _choice(KEY_STATES, "filter_key", "Host key")
    sort = django_filters.OrderingFilter(
        fields=SORTS,
        field_labels={"vfs_configured": "VFs", "last_discovery_at": "Last discovery"},
        label="Sort",
    )

    class Meta:
        model = Hypervisor
        fields = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read the drivers when first needed and once per request (validation and rendering both
        # iterate the choices; an API call without ?driver= needs none).
        cached = {}

        def choices():
            if "drivers" not in cached:
                cached["drivers"] = driver_choices()
            return cached["drivers"]

        self.filters["driver"].extra["choices"] = choices

    def filter_q(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(name__icontains=value) | Q(address__icontains=value) | Q(hostname__icontains=value)
        )

    def filter_label(self, queryset, name, value):
        links = Hypervisor.labels.through.objects.filter(hypervisor_id=OuterRef("pk"), label_id=value.pk)
        return queryset.filter(Exists(links))

    def filter_driver(self, queryset, name, value):
        return queryset.filter(Exists(Nic.objects.filter(host=OuterRef("pk"), present=True, driver=value)))

    def filter_sriov(self, queryset, name, value):
        return _yes_no(queryset, Exists(Nic.objects.filter(SRIOV_NIC, host=OuterRef("pk"))), value)

    def filter_iommu(self, queryset, name, value):
        # "no" is a known "off"; hosts never discovered (unknown) are in neither.
        return queryset.filter(iommu_active={"yes": True, "no": False}[value]) if value else queryset

    def filter_drifted(self, queryset, name, value):
        return _yes_no(queryset, Q(drifted=True), value)

    def filter_key(self, queryset, name, value):
        mismatch = Q(status=Hypervisor.Status.HOST_KEY_MISMATCH)
        if value == "pending":
            return queryset.filter(KEY_PENDING)
        if value == "mismatch":
            return queryset.filter(mismatch)
        if value == "trusted":
            return queryset.exclude(host_key_fingerprint="").exclude(mismatch)
        if value == "none":
            return queryset.filter(host_key_fingerprint="", pending_host_key_fingerprint="")
        return queryset

    @property
    def qs(self):
        queryset = super().qs
        if not queryset.query.order_by:
            queryset = queryset.order_by("name")
        elif "name" not in queryset.query.order_by and "-name" not in queryset.query.order_by:
            queryset = queryset.order_by(*queryset.query.order_by, "name")  # stable pages
        return queryset


# -- VF usage (the fleet-wide "VF usage" page and the API's VF list) ---------------------------

IN_USE = (("yes", "In use"), ("no", "Free"))


def vf_driver_choices():
    drivers = VirtualFunction.objects.filter(present=True).exclude(driver="").order_by("driver")
    return [(d, d) for d in drivers.values_list("driver", flat=True).distinct()]


class VfUsageFilterSet(django_filters.FilterSet):
    """Present VFs of present PFs, by host, label, PF, guest, driver and whether a guest uses them.
    Every filter is a column of the VF, its NIC or an EXISTS on the host's labels: no join multiplies rows."""

    host = django_filters.CharFilter(field_name="nic__host__name", lookup_expr="icontains", label="Host",
                                     widget=forms.TextInput(attrs={"type": "search", "placeholder": "host name"}))
    label = django_filters.ModelChoiceFilter(
        queryset=Label.objects.all(), to_field_name="name", method="filter_label", empty_label="any", label="Label",
    )
    pf = django_filters.CharFilter(field_name="nic__name", label="PF",
                                   widget=forms.TextInput(attrs={"placeholder": "eno49"}))
    guest = django_filters.CharFilter(field_name="guest", lookup_expr="icontains", label="Guest",
                                      widget=forms.TextInput(attrs={"type": "search", "placeholder": "guest name"}))
    driver = django_filters.ChoiceFilter(choices=vf_driver_choices, empty_label="any", label="Driver")
    in_use = _choice(IN_USE, "filter_in_use", "Use")

    class Meta:
        model = VirtualFunction
        fields = []

    def filter_label(self, queryset, name, value):
        links = Hypervisor.labels.through.objects.filter(hypervisor_id=OuterRef("nic__host_id"), label_id=value.pk)
        return queryset.filter(Exists(links))

    def filter_in_use(self, queryset, name, value):
        return _yes_no(queryset, ~Q(guest=""), value)


def usage_vfs():
    """The VF usage page's rows: present VFs of present NICs, host and NIC with them (one query a page)."""
    return (VirtualFunction.objects.filter(present=True, nic__present=True)
            .select_related("nic", "nic__host").order_by("nic__host__name", "nic__name", "index"))


def free_per_pf(params):
    """PFs with VFs, the same host/label/PF filters as the VF rows, with their free and used VF counts."""
    pfs = Nic.objects.filter(present=True, sriov_numvfs__gt=0).select_related("host")
    if (params.get("host") or "").strip():
        pfs = pfs.filter(host__name__icontains=params["host"].strip())
    if (params.get("pf") or "").strip():
        pfs = pfs.filter(name=params["pf"].strip())
    if (params.get("label") or "").strip():
        links = Hypervisor.labels.through.objects.filter(hypervisor_id=OuterRef("host_id"),
                                                         label__name=params["label"].strip())
        pfs = pfs.filter(Exists(links))
    return with_vf_usage(pfs, free="free", used="used").order_by("host__name", "name")


def with_vf_usage(nics, *, free="vfs_free", used="vfs_in_use"):
    """NICs annotated with their present VFs that no guest uses (free) and that a guest uses."""
    present = Q(vfs__present=True)
    return nics.annotate(**{
        free: Count("vfs", filter=present & Q(vfs__guest="")),
        used: Count("vfs", filter=present & ~Q(vfs__guest="")),
    })
