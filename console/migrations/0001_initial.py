from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="ConsolePermission",
            fields=[("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False))],
            options={
                "managed": False,
                "default_permissions": (),
                "permissions": [
                    ("view_fleet", "Can view the dashboard, hosts and changes"),
                    ("operate", "Can manage hosts, run discovery and request changes"),
                    ("approve", "Can approve or reject changes requested by others"),
                    ("audit", "Can review and export the audit history"),
                    ("administer", "Can manage credentials, host-key trust and users"),
                ],
            },
        ),
    ]
