"""Intent rows replace Nic.managed_numvfs and Hypervisor.managed_kernel_args: every operation
records what it applied in one table (changes/operations/); the old values are carried over."""

import django.db.models.deletion
from django.db import migrations, models
from django.utils import timezone


def carry_over(apps, schema_editor):
    Hypervisor = apps.get_model("hosts", "Hypervisor")
    Nic = apps.get_model("hosts", "Nic")
    Intent = apps.get_model("hosts", "Intent")
    now = timezone.now()
    rows = [
        Intent(host_id=nic.host_id, operation="set_vfs", subject=nic.pci_address, value=nic.managed_numvfs,
               summary=f"{nic.managed_numvfs} VFs on {nic.name}", applied_at=now)
        for nic in Nic.objects.exclude(managed_numvfs=None)
    ]
    for host in Hypervisor.objects.exclude(managed_kernel_args=[]):
        args = [str(a) for a in host.managed_kernel_args or []]
        if args:
            rows.append(Intent(host_id=host.pk, operation="kernel_args", subject="", value=args,
                               summary=" ".join(args), applied_at=now))
    Intent.objects.bulk_create(rows, batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ("hosts", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Intent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("operation", models.CharField(max_length=50)),
                ("subject", models.CharField(blank=True, max_length=100)),
                ("value", models.JSONField()),
                ("summary", models.CharField(max_length=300)),
                ("change_id", models.PositiveBigIntegerField(blank=True, null=True)),
                ("applied_at", models.DateTimeField()),
                ("host", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="intents",
                                           to="hosts.hypervisor")),
            ],
            options={
                "ordering": ["host", "operation", "subject"],
                "constraints": [
                    models.UniqueConstraint(fields=("host", "operation", "subject"), name="intent_unique_subject")
                ],
            },
        ),
        migrations.RunPython(carry_over, migrations.RunPython.noop),
        migrations.RemoveField(model_name="hypervisor", name="managed_kernel_args"),
        migrations.RemoveField(model_name="nic", name="managed_numvfs"),
    ]
