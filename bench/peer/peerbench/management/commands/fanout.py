"""`manage.py fanout PREFIX`: one notification to every user PREFIX… the library's way, `notify.send`
with the users as a queryset, inside one `transaction.atomic()` (one commit; in autocommit each of
its INSERTs would commit on its own, which is slower). Prints {"rows": …, "seconds": …} as JSON: the
seconds from the call until the commit returned, the rows it left."""

import json
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from notifications.models import Notification
from notifications.signals import notify

from peerbench.actor import actor

VERB = "Maintenance tonight"


class Command(BaseCommand):
    help = "Time notify.send to every user whose name starts with PREFIX, in one transaction."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix, **options):
        sender = actor()
        recipients = get_user_model().objects.filter(username__startswith=prefix)
        started = time.perf_counter()
        with transaction.atomic():
            notify.send(
                sender,
                recipient=recipients,
                verb=VERB,
                description="The platform is read-only from 02:00 to 03:00 UTC.",
            )
        seconds = time.perf_counter() - started
        rows = Notification.objects.filter(verb=VERB, recipient__username__startswith=prefix).count()
        self.stdout.write(json.dumps({"rows": rows, "seconds": seconds}))
