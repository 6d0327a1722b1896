"""The peer's manage.py: run by bench/django_peer.py with bench/peer/.venv's python, never Herald's."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peerbench.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
