"""The user every bench notification comes from: `notify.send` needs an actor, and the seeded rows
point at the same one."""

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password

ACTOR = "herald-bench-actor"


def actor():
    user_model = get_user_model()
    return user_model.objects.get_or_create(username=ACTOR, defaults={"password": make_password(None)})[0]
