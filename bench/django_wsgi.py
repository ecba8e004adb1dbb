"""Django's WSGI application alone, without the lean webhook path in front:
the baseline of bench/webhook_ingest.py (the web as it was before issue 17)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
application = get_wsgi_application()
