"""The web process's WSGI application: Django, with the webhook's POST
answered by the lean path in front of it (messaging/api/ingest.py, issue 17).
Same process, same settings; every other request goes to Django."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
django_application = get_wsgi_application()

from messaging.api.ingest import WebhookFront  # noqa: E402 (needs Django set up)

application = WebhookFront(django_application)
