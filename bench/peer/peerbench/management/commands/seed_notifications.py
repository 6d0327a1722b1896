"""`manage.py seed_notifications USER COUNT [--read-every N]`: COUNT notifications for USER in one
INSERT … SELECT into the library's own table, shaped as `notify.send` writes them (actor, verb,
description, level, timestamps one second apart), every N-th one read; then VACUUM ANALYZE and a
CHECKPOINT, as Herald's seed settles its tables: the peer's counts can use its index alone, and the
server does not write out a million new rows in the middle of a later figure."""

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand
from django.db import connection
from notifications.models import Notification

from peerbench.actor import actor

_NOTIFICATIONS = """
INSERT INTO {table} (level, recipient_id, unread, actor_content_type_id, actor_object_id, verb, description,
                     timestamp, public, deleted, emailed)
SELECT 'info', %s, NOT (%s > 0 AND g %% %s = 0), %s, %s, 'completed',
       'A Scan operation on datastore ' || (g %% 500) || ' has completed.',
       now() - g * interval '1 second', true, false, false
FROM generate_series(1, %s) g
"""


class Command(BaseCommand):
    help = "Give USER COUNT notifications in one statement."

    def add_arguments(self, parser):
        parser.add_argument("user")
        parser.add_argument("count", type=int)
        parser.add_argument("--read-every", type=int, default=0, help="every N-th one is read (0: none)")

    def handle(self, *args, user, count, read_every, **options):
        recipient = get_user_model().objects.get(username=user)
        sender = actor()
        kind = ContentType.objects.get_for_model(sender)
        table = Notification._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                _NOTIFICATIONS.format(table=table),
                [recipient.pk, read_every, max(read_every, 1), kind.pk, str(sender.pk), count],
            )
            cursor.execute(f"VACUUM ANALYZE {table}")
            cursor.execute("CHECKPOINT")
