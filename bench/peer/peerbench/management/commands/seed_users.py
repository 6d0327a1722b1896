"""`manage.py seed_users PREFIX COUNT [--password P]`: users PREFIX1 … PREFIXCOUNT in one
INSERT … SELECT (100,000 through the ORM would take minutes and measure nothing). With
--password they can log in (hashed once for all of them); without, they cannot."""

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand
from django.db import connection

_USERS = """
INSERT INTO {table} (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)
SELECT %s, false, %s::text || g, '', '', '', false, true, now() FROM generate_series(1, %s) g
"""


class Command(BaseCommand):
    help = "Create users PREFIX1 … PREFIXCOUNT in one statement."

    def add_arguments(self, parser):
        parser.add_argument("prefix")
        parser.add_argument("count", type=int)
        parser.add_argument("--password", default="")

    def handle(self, *args, prefix, count, password, **options):
        table = get_user_model()._meta.db_table
        hashed = make_password(password or None)  # None: an unusable password
        with connection.cursor() as cursor:
            cursor.execute(_USERS.format(table=table), [hashed, prefix, count])
            cursor.execute(f"ANALYZE {table}")
