"""Filters of the inventory collections: the hosts page's own filter set where it exists."""

import django_filters
from django.db.models import Exists, OuterRef, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from api.filters import id_filter
from hosts.filters import YES_NO, HostFilterSet
from hosts.models import Hypervisor, LibvirtNetwork, Nic, VirtualFunction


class HostApiFilter(HostFilterSet):
    """hosts/filters.py's HostFilterSet: q, label, status, driver, sriov, iommu, drifted, key."""

    # Same filtering; the annotations only tell the schema these take a name (a string).
    @extend_schema_field(OpenApiTypes.STR)
    def filter_label(self, queryset, name, value):
        return super().filter_label(queryset, name, value)

    @extend_schema_field(OpenApiTypes.STR)
    def filter_driver(self, queryset, name, value):
        return super().filter_driver(queryset, name, value)


HostApiFilter.base_filters.pop("sort", None)

class NicFilter(django_filters.FilterSet):
    host = id_filter("host_id", "Host id")
    host_name = django_filters.CharFilter(field_name="host__name", max_length=63)
    name = django_filters.CharFilter(field_name="name", max_length=15)
    driver = django_filters.CharFilter(field_name="driver", max_length=50)
    pci_address = django_filters.CharFilter(field_name="pci_address", max_length=12)
    sriov = django_filters.ChoiceFilter(choices=YES_NO, method="filter_sriov", label="SR-IOV capable")
    present = django_filters.BooleanFilter(field_name="present")

    class Meta:
        model = Nic
        fields = []

    def filter_sriov(self, queryset, name, value):
        capable = Q(sriov_totalvfs__gt=0)
        return queryset.filter(capable) if value == "yes" else queryset.exclude(capable)

class VfFilter(django_filters.FilterSet):
    """The VF usage page's filters too: host_name, label, pf, guest, driver, in_use."""

    nic = id_filter("nic_id", "NIC id")
    host = id_filter("nic__host_id", "Host id")
    host_name = django_filters.CharFilter(field_name="nic__host__name", lookup_expr="icontains", max_length=63)
    label = django_filters.CharFilter(method="filter_label", max_length=63, label="Host label")
    pf = django_filters.CharFilter(field_name="nic__name", max_length=15, label="PF interface name")
    guest = django_filters.CharFilter(field_name="guest", lookup_expr="icontains", max_length=200)
    driver = django_filters.CharFilter(field_name="driver", max_length=50)
    vlan = django_filters.NumberFilter(field_name="vlan")
    present = django_filters.BooleanFilter(field_name="present")
    in_use = django_filters.BooleanFilter(method="filter_in_use", label="Used by a guest")

    class Meta:
        model = VirtualFunction
        fields = []

    def filter_in_use(self, queryset, name, value):
        return queryset.exclude(guest="") if value else queryset.filter(guest="")

    def filter_label(self, queryset, name, value):
        links = Hypervisor.labels.through.objects.filter(hypervisor_id=OuterRef("nic__host_id"), label__name=value)
        return queryset.filter(Exists(links))


class LibvirtNetworkFilter(django_filters.FilterSet):
    host = id_filter("host_id", "Host id")
    host_name = django_filters.CharFilter(field_name="host__name", max_length=63)
    name = django_filters.CharFilter(field_name="name", max_length=100)
    vf_pool = django_filters.BooleanFilter(field_name="vf_pool")
    managed = django_filters.BooleanFilter(field_name="managed")

    class Meta:
        model = LibvirtNetwork
        fields = []

