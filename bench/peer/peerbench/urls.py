"""The library's own URLs, mounted where its README mounts them, and Django's login view (the
notification API answers an anonymous caller with empty results: the bench logs in first)."""

from django.contrib.auth.views import LoginView
from django.urls import include, path

urlpatterns = [
    path("inbox/notifications/", include("notifications.urls", namespace="notifications")),
    path("accounts/login/", LoginView.as_view(), name="login"),
]
