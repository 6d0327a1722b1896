"""django-notifications-hq set up as a Django project would deploy it, for `make bench` to measure
beside Herald in the same run (bench/django_peer.py drives it). It runs only in bench/peer/.venv,
which has Django and the library; Herald never imports it."""
