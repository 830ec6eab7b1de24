"""PostgreSQL: the Actor filter matches a prefix (LIKE 'name%'), served by this index whatever the
database collation (as audit_action_prefix_idx does for Action)."""

from django.db import migrations


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS audit_actor_prefix_idx ON audit_auditevent (actor_name varchar_pattern_ops, id)"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS audit_actor_prefix_idx")


class Migration(migrations.Migration):

    dependencies = [("audit", "0002_append_only")]

    operations = [migrations.RunPython(forwards, backwards)]
