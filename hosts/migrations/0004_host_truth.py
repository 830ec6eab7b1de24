from django.db import migrations, models


class Migration(migrations.Migration):
    """What the agent reports of the host as it is: PF links, other boot configuration, PFs without
    a network interface, the firmware's IOMMU, the boot configuration, guests that start at boot."""

    dependencies = [
        ("hosts", "0003_host_nic_figures"),
    ]

    operations = [
        migrations.AddField(model_name="hypervisor", name="iommu_firmware",
                            field=models.JSONField(blank=True, default=dict)),
        migrations.AddField(model_name="hypervisor", name="boot_config",
                            field=models.JSONField(blank=True, default=dict)),
        migrations.AddField(model_name="hypervisor", name="defined_guests",
                            field=models.JSONField(blank=True, default=list)),
        migrations.AddField(model_name="hypervisor", name="other_vf_config",
                            field=models.JSONField(blank=True, default=list)),
        migrations.AddField(model_name="nic", name="persisted_conflict", field=models.BooleanField(default=False)),
        migrations.AddField(model_name="nic", name="binding_state",
                            field=models.CharField(blank=True, max_length=20)),
        migrations.AddField(model_name="nic", name="not_capable_reason", field=models.TextField(blank=True)),
        migrations.AddField(model_name="nic", name="max_vfs_form", field=models.CharField(blank=True, max_length=10)),
        migrations.AddField(model_name="nic", name="device_busy", field=models.BooleanField(default=False)),
        migrations.AddField(model_name="nic", name="link", field=models.JSONField(blank=True, null=True)),
        migrations.AddField(model_name="nic", name="other_config", field=models.JSONField(blank=True, default=list)),
        migrations.AddField(model_name="virtualfunction", name="used_via",
                            field=models.CharField(blank=True, max_length=300)),
    ]
