"""A production-like Django: DEBUG off, persistent database connections, the default middleware,
sessions in the database (Django's default), django-notifications-hq's own settings left alone.

PEER_DATABASE_URL names the peer's own database (postgresql://user@host:port/name) on the bench's
PostgreSQL server."""

import os
from urllib.parse import unquote, urlsplit

_url = urlsplit(os.environ["PEER_DATABASE_URL"])

SECRET_KEY = "herald-bench-django-peer-not-a-secret"  # noqa: S105 - a throwaway bench server on loopback
DEBUG = False  # DEBUG on keeps every query in memory: no deployment runs so
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "peerbench.urls"
WSGI_APPLICATION = "peerbench.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "notifications",
    "peerbench",
]

# startproject's middleware, less messages (no app here uses them).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",  # psycopg 3
        "NAME": _url.path.lstrip("/"),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        # Each worker keeps its connection, as a deployment would: without it every request
        # would pay a new PostgreSQL connection, and the peer would look slower than it is.
        "CONN_MAX_AGE": 600,
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
