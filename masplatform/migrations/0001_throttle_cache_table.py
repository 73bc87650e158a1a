"""The table of the ``throttle`` cache (the login rate limits' counters), when that cache is the database.

``createcachetable`` does it from the settings and skips a table that exists, so this is safe to run on a
database made before this migration (``make setup`` always runs ``migrate``)."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies: list = []
    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop, elidable=False)]
