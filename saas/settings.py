"""One settings module, read from the environment (names from DESIGN.md).

Production differs from development by variables, never by code paths.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(env("ENV_FILE", default=str(BASE_DIR / ".env")), overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

INSECURE_DEFAULT = "insecure-dev-only-change-me"
SECRET_KEY = env("SECRET_KEY", default=INSECURE_DEFAULT)
WHATSAPP_APP_SECRET = env("WHATSAPP_APP_SECRET", default=INSECURE_DEFAULT)
JWT_SIGNING_KEY = env("JWT_SIGNING_KEY", default=INSECURE_DEFAULT + "-jwt")

if not DEBUG:
    for name, value in (
        ("SECRET_KEY", SECRET_KEY),
        ("WHATSAPP_APP_SECRET", WHATSAPP_APP_SECRET),
        ("JWT_SIGNING_KEY", JWT_SIGNING_KEY),
    ):
        if not value or value.startswith(INSECURE_DEFAULT):
            raise ImproperlyConfigured(
                f"{name} is missing or left at its development default, and DEBUG "
                f"is off. Set {name} in the environment to a long random value "
                f"(python -c 'import secrets; print(secrets.token_urlsafe(50))')."
            )
    if SECRET_KEY == JWT_SIGNING_KEY:
        raise ImproperlyConfigured("JWT_SIGNING_KEY must differ from SECRET_KEY.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "saas.apps.AdminConfig",  # django.contrib.admin, with the queue page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "saas",
    "bookings",
    "messaging",
    "notifications",
    "queues",
]

MIDDLEWARE = [
    "saas.middleware.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "saas.urls"
WSGI_APPLICATION = "saas.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
# SQLite under var/ is the embedded default; WAL and a busy timeout let the web
# process, the workers and beat share it. PostgreSQL (psycopg 3) otherwise.
if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", 60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Behind PgBouncer in transaction mode a session is not ours between
    # transactions: no server-side cursors, no prepared statements (docs/DEPLOY.md).
    if env.bool("PGBOUNCER_TRANSACTION_POOLING", default=False):
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = None
else:
    VAR_DIR.mkdir(exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": (
                    "PRAGMA journal_mode=WAL;"
                    "PRAGMA synchronous=NORMAL;"
                    "PRAGMA busy_timeout=20000;"
                ),
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
# Inbound WhatsApp media, stored through STORAGES["default"] (any backend a
# deployment configures, e.g. S3 through django-storages).
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
MEDIA_URL = "media/"  # never served as static files: /api/messages/{id}/media/

# Bodies over this size are refused before they reach a view (the webhook
# allows 4 MiB, Meta sends up to 3 MB).
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
WEBHOOK_MAX_BODY_BYTES = 4 * 1024 * 1024
REQUEST_MAX_BODY_BYTES = env.int("REQUEST_MAX_BODY_BYTES", default=1024 * 1024)

# --- Redis ------------------------------------------------------------------
REDIS_HOST = env("REDIS_HOST", default="127.0.0.1")
REDIS_PORT = env.int("REDIS_PORT", default=6379)
REDIS_PASSWORD = env("REDIS_PASSWORD", default="")
REDIS_DB = env.int("REDIS_DB", default=0)
REDIS_QUEUE_HOST = env("REDIS_QUEUE_HOST", default=REDIS_HOST)
REDIS_QUEUE_PORT = env.int("REDIS_QUEUE_PORT", default=REDIS_PORT)
REDIS_QUEUE_PASSWORD = env("REDIS_QUEUE_PASSWORD", default=REDIS_PASSWORD)
REDIS_QUEUE_DB = env.int("REDIS_QUEUE_DB", default=1)
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=0.25)
REDIS_CONNECT_TIMEOUT = env.float("REDIS_CONNECT_TIMEOUT", default=0.25)


def redis_url(host: str, port: int, db: int, password: str = "") -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


REDIS_CACHE_URL = redis_url(REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_PASSWORD)
REDIS_QUEUE_URL = redis_url(
    REDIS_QUEUE_HOST, REDIS_QUEUE_PORT, REDIS_QUEUE_DB, REDIS_QUEUE_PASSWORD
)

# Sentinel (issue 14): "host:port,host:port,..." of the sentinels that watch
# the cache's master (REDIS_SENTINEL_MASTER) and the broker's (its own master
# name; by default the same sentinels). Unset: plain host and port as above.
REDIS_SENTINELS = env.list("REDIS_SENTINELS", default=[])
REDIS_SENTINEL_MASTER = env("REDIS_SENTINEL_MASTER", default="mymaster")
REDIS_QUEUE_SENTINELS = env.list("REDIS_QUEUE_SENTINELS", default=REDIS_SENTINELS)
REDIS_QUEUE_SENTINEL_MASTER = env(
    "REDIS_QUEUE_SENTINEL_MASTER", default=REDIS_SENTINEL_MASTER
)
# For sentinels started with requirepass (the masters use the passwords above).
REDIS_SENTINEL_PASSWORD = env("REDIS_SENTINEL_PASSWORD", default="")

_redis_cache_options = {
    "CLIENT_CLASS": "django_redis.client.DefaultClient",
    "PARSER_CLASS": "redis.connection._HiredisParser",
    "SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT,
    "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
    "IGNORE_EXCEPTIONS": True,
    # Never pickle: whoever can write to the cache's Redis must not run code here.
    "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
    "CONNECTION_POOL_KWARGS": {
        "health_check_interval": 30,
        "max_connections": env.int("REDIS_MAX_CONNECTIONS", default=512),
    },
}
if REDIS_SENTINELS:
    # The master only, for reads too: a replica may not have an invalidation yet.
    _redis_cache_location = [
        redis_url(REDIS_SENTINEL_MASTER, 6379, REDIS_DB, REDIS_PASSWORD)
    ]
    _redis_cache_options.update(
        CLIENT_CLASS="django_redis.client.SentinelClient",
        CONNECTION_FACTORY="django_redis.pool.SentinelConnectionFactory",
        SENTINELS=[
            (host, int(port))
            for host, _, port in (item.rpartition(":") for item in REDIS_SENTINELS)
        ],
        SENTINEL_KWARGS={
            "socket_timeout": REDIS_SOCKET_TIMEOUT,
            "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
            "password": REDIS_SENTINEL_PASSWORD or None,
        },
    )
else:
    # A connection to a primary demoted behind a moving DNS name is dropped.
    from saas.redis import FailoverConnection

    _redis_cache_location = REDIS_CACHE_URL
    _redis_cache_options["CONNECTION_POOL_KWARGS"]["connection_class"] = (
        FailoverConnection
    )
CACHES = {
    # Keys are stored under exactly the documented names (salon:<id>, ...).
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _redis_cache_location,
        "KEY_FUNCTION": "saas.redis.raw_key",
        "OPTIONS": _redis_cache_options,
    },
    "throttle": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _redis_cache_location,
        "KEY_PREFIX": "throttle",
        "OPTIONS": _redis_cache_options,
    },
}
DJANGO_REDIS_IGNORE_EXCEPTIONS = True
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
DJANGO_REDIS_LOGGER = "saas.cache"

CACHE_TTL_SECONDS = env.int("CACHE_TTL_SECONDS", default=3600)
DASHBOARD_CACHE_TTL_SECONDS = env.int("DASHBOARD_CACHE_TTL_SECONDS", default=300)
SALON_CACHE_TTL_SECONDS = env.int("SALON_CACHE_TTL_SECONDS", default=1800)
TEMPLATE_CACHE_TTL_SECONDS = env.int("TEMPLATE_CACHE_TTL_SECONDS", default=3600)
CONVERSATION_CACHE_TTL_SECONDS = env.int("CONVERSATION_CACHE_TTL_SECONDS", default=600)
# user:{id}, read by the API's JWT authentication; saves and deletes invalidate
# it, the TTL bounds writes that bypass signals (queryset update()).
USER_CACHE_TTL_SECONDS = env.int("USER_CACHE_TTL_SECONDS", default=60)

# --- Celery -----------------------------------------------------------------
QUEUE_RETRY_ATTEMPTS = env.int("QUEUE_RETRY_ATTEMPTS", default=3)
WEBHOOK_QUEUE_CONCURRENCY = env.int("WEBHOOK_QUEUE_CONCURRENCY", default=5)
MESSAGE_QUEUE_CONCURRENCY = env.int("MESSAGE_QUEUE_CONCURRENCY", default=10)
BOOKING_QUEUE_CONCURRENCY = env.int("BOOKING_QUEUE_CONCURRENCY", default=3)
EMAIL_QUEUE_CONCURRENCY = env.int("EMAIL_QUEUE_CONCURRENCY", default=5)
OUTBOUND_QUEUE_CONCURRENCY = env.int("OUTBOUND_QUEUE_CONCURRENCY", default=5)
MEDIA_QUEUE_CONCURRENCY = env.int("MEDIA_QUEUE_CONCURRENCY", default=5)

# Longer than any retry delay or task time limit: an unacknowledged message is
# redelivered only when its worker is really gone.
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=900)
# A job whose record waits this long while no list holds its message and no
# worker holds it unacked is lost (queues/lost_jobs.py): published again when
# a later sweep, this much later, finds it still missing.
QUEUE_LOST_JOB_AFTER_SECONDS = env.float("QUEUE_LOST_JOB_AFTER_SECONDS", default=60.0)
QUEUE_LOST_JOB_CONFIRM_SECONDS = env.float(
    "QUEUE_LOST_JOB_CONFIRM_SECONDS", default=30.0
)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=90)

# /metrics: a scrape must bear "Authorization: Bearer <METRICS_TOKEN>"; unset,
# only loopback clients may scrape. The exposition is reused for this long.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_CACHE_SECONDS = env.float("METRICS_CACHE_SECONDS", default=5.0)

QUEUE_DASHBOARD_ENABLED = env.bool("QUEUE_DASHBOARD_ENABLED", default=True)
QUEUE_DASHBOARD_PATH = env("QUEUE_DASHBOARD_PATH", default="/admin/queues")
FLOWER_PORT = env.int("FLOWER_PORT", default=5555)
FLOWER_URL = env("FLOWER_URL", default=f"http://127.0.0.1:{FLOWER_PORT}/")
# Job records (queues/records.py) and the retention DESIGN.md gives them.
QUEUE_JOB_RECORDS = env.bool("QUEUE_JOB_RECORDS", default=True)
QUEUE_COMPLETED_RETENTION_SECONDS = env.int(
    "QUEUE_COMPLETED_RETENTION_SECONDS", default=24 * 3600
)
QUEUE_COMPLETED_RETENTION_COUNT = env.int(
    "QUEUE_COMPLETED_RETENTION_COUNT", default=1000
)
QUEUE_FAILED_RETENTION_SECONDS = env.int(
    "QUEUE_FAILED_RETENTION_SECONDS", default=7 * 24 * 3600
)
QUEUE_FAILED_RETENTION_COUNT = env.int("QUEUE_FAILED_RETENTION_COUNT", default=5000)
# Workers poll the durable pause flags and write their heartbeat this often.
QUEUE_CONTROL_INTERVAL_SECONDS = env.float(
    "QUEUE_CONTROL_INTERVAL_SECONDS", default=1.0
)
QUEUE_HEARTBEAT_STALE_SECONDS = env.float("QUEUE_HEARTBEAT_STALE_SECONDS", default=10.0)
# Issue 13: a job of a paused queue is handed back as it is about to start
# (off only to measure the check's cost, bench/pause_check.py).
QUEUE_PAUSE_CHECK_ON_START = env.bool("QUEUE_PAUSE_CHECK_ON_START", default=True)
# A queue with waiting jobs and live workers none of which took a job for this
# long raises queue_stalled.
QUEUE_STALLED_SECONDS = env.float("QUEUE_STALLED_SECONDS", default=60.0)
# Re-drive by filter: jobs published again per second (default, and at most).
QUEUE_REDRIVE_RATE_PER_SECOND = env.float("QUEUE_REDRIVE_RATE_PER_SECOND", default=20.0)
QUEUE_REDRIVE_MAX_RATE = env.float("QUEUE_REDRIVE_MAX_RATE", default=200.0)

# --- WhatsApp ---------------------------------------------------------------
WHATSAPP_VERIFY_TOKEN = env("WHATSAPP_VERIFY_TOKEN", default="")
WHATSAPP_ACCESS_TOKEN = env("WHATSAPP_ACCESS_TOKEN", default="")
WHATSAPP_BACKEND = env("WHATSAPP_BACKEND", default="console")
WHATSAPP_API_BASE_URL = env(
    "WHATSAPP_API_BASE_URL", default="https://graph.facebook.com/v21.0"
)
WHATSAPP_REMINDER_TEMPLATE = env(
    "WHATSAPP_REMINDER_TEMPLATE", default="booking_reminder"
)
WHATSAPP_HTTP_TIMEOUT_SECONDS = env.float("WHATSAPP_HTTP_TIMEOUT_SECONDS", default=10.0)
# Outbound pacing (messaging/throughput.py): Meta's limit per business number
# (a salon's whatsapp_throughput_per_second overrides it), and the answer time
# the number of sends in flight is sized for (rate x latency).
WHATSAPP_THROUGHPUT_PER_SECOND = env.int("WHATSAPP_THROUGHPUT_PER_SECOND", default=80)
WHATSAPP_SEND_LATENCY_SECONDS = env.float("WHATSAPP_SEND_LATENCY_SECONDS", default=0.3)
# The governor paces at the rate less this fraction: Meta counts sends on
# arrival, and the margin absorbs the jitter between a grant and its arrival.
WHATSAPP_THROUGHPUT_HEADROOM = env.float("WHATSAPP_THROUGHPUT_HEADROOM", default=0.05)
# A 130429 under pacing means arrival jitter, not a rate far too high: keep
# 0.85 of the rate, hold it 1 s, add the rest back over the next 5 s x 0.15.
WHATSAPP_THROUGHPUT_BACKOFF = env.float("WHATSAPP_THROUGHPUT_BACKOFF", default=0.85)
WHATSAPP_THROUGHPUT_PENALTY_HOLD_SECONDS = env.float(
    "WHATSAPP_THROUGHPUT_PENALTY_HOLD_SECONDS", default=1.0
)
WHATSAPP_THROUGHPUT_RECOVERY_SECONDS = env.float(
    "WHATSAPP_THROUGHPUT_RECOVERY_SECONDS", default=5.0
)
# A number idle for a second starts at half its rate and reaches it in 1.5 s:
# its first sends open connections and arrive late, bunched with later ones.
WHATSAPP_THROUGHPUT_SLOW_START = env.float("WHATSAPP_THROUGHPUT_SLOW_START", default=0.5)
WHATSAPP_THROUGHPUT_SLOW_START_SECONDS = env.float(
    "WHATSAPP_THROUGHPUT_SLOW_START_SECONDS", default=1.5
)

# --- E-mail -----------------------------------------------------------------
if env("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))
else:
    EMAIL_BACKEND = env(
        "EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
    )
    EMAIL_HOST = env("EMAIL_HOST", default="localhost")
    EMAIL_PORT = env.int("EMAIL_PORT", default=25)
    EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
    EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
    EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Salon <no-reply@localhost>")
SMTP_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
if not DEBUG and (
    EMAIL_BACKEND != SMTP_EMAIL_BACKEND
    or not (env("EMAIL_URL", default="") or env("EMAIL_HOST", default=""))
):
    raise ImproperlyConfigured(
        "No SMTP host is configured and DEBUG is off: e-mails would be lost. Set "
        "EMAIL_URL (e.g. smtp+tls://user:password@smtp.example.com:587) or "
        "EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend with EMAIL_HOST."
    )

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "saas.api.authentication.CachedUserJWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["saas.api.parsers.SafeJSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "saas.api.schema.AutoSchema",
    # Clients are told apart by the address the trusted proxies saw
    # (saas/api/throttles.py); 0 proxies: REMOTE_ADDR, X-Forwarded-For ignored.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
    "DEFAULT_THROTTLE_RATES": {
        "auth": env("AUTH_THROTTLE_RATE", default="20/min"),
        "auth_username": env("AUTH_USERNAME_THROTTLE_RATE", default="10/min"),
        "password_reset_address": env("PASSWORD_RESET_THROTTLE_RATE", default="3/hour"),
        "booking_email": env("BOOKING_EMAIL_THROTTLE_RATE", default="200/hour"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "EXCEPTION_HANDLER": "saas.api.exceptions.exception_handler",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(
        minutes=env.int("JWT_ACCESS_TOKEN_MINUTES", default=15)
    ),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_TOKEN_DAYS", 7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    # Tokens carry a hash of the password hash: a password change (reset,
    # admin, set_password) ends every access and refresh token at once.
    "CHECK_REVOKE_TOKEN": True,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Salon messaging API",
    "DESCRIPTION": "WhatsApp-first salon bookings: salons, bookings, conversations.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "BookingStatusEnum": "bookings.models.Booking.Status",
        "MessageStatusEnum": "messaging.models.Message.Status",
        "TemplateStatusEnum": "messaging.models.MessageTemplate.Status",
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Security (production is DEBUG off behind TLS) -------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Logging: one line per event, with the component's name -----------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s [%(name)s] %(message)s"},
    },
    "filters": {"redact": {"()": "saas.logfilters.RedactSecrets"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "line",
            "filters": ["redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": LOG_LEVEL},
    },
}

# --- Cache behaviour (saas/cache.py) ------------------------------------------
# After a Redis error the cache is skipped for this long (per process), so a
# request waits at most one socket timeout; the outage is logged once per interval.
CACHE_RETRY_AFTER_SECONDS = env.float("CACHE_RETRY_AFTER_SECONDS", default=1.0)
CACHE_ERROR_LOG_INTERVAL_SECONDS = env.float(
    "CACHE_ERROR_LOG_INTERVAL_SECONDS", default=60.0
)
# Stampede lock: how long one computation may hold a key before others compute.
CACHE_LOCK_SECONDS = env.float("CACHE_LOCK_SECONDS", default=10.0)
# An invalidated key holds a tombstone this long, so a reader that computed
# before the write cannot store its stale value.
CACHE_TOMBSTONE_SECONDS = env.float("CACHE_TOMBSTONE_SECONDS", default=60.0)

# --- WhatsApp webhook inbox (issue 3) ----------------------------------------
# Beat re-drives pending webhook events older than this (enqueue failed, or
# the job died), at most this many per run.
WHATSAPP_WEBHOOK_REDRIVE_AFTER_SECONDS = env.int(
    "WHATSAPP_WEBHOOK_REDRIVE_AFTER_SECONDS", default=300
)
WHATSAPP_WEBHOOK_REDRIVE_BATCH = env.int("WHATSAPP_WEBHOOK_REDRIVE_BATCH", default=1000)
# A drain job applies up to this many pending events per transaction...
WHATSAPP_WEBHOOK_BATCH_SIZE = env.int("WHATSAPP_WEBHOOK_BATCH_SIZE", default=100)
# ...and hands over to a fresh job after this long (below the soft time limit).
WHATSAPP_WEBHOOK_DRAIN_SECONDS = env.float(
    "WHATSAPP_WEBHOOK_DRAIN_SECONDS", default=20.0
)
# After a batch that was not full, wait this long for more events before the
# next claim: fuller batches under a steady stream, for this much latency.
WHATSAPP_WEBHOOK_DRAIN_LINGER_SECONDS = env.float(
    "WHATSAPP_WEBHOOK_DRAIN_LINGER_SECONDS", default=0.05
)
# Beat queues again outbound messages still queued this long after they were
# written (their enqueue failed, or their job was lost).
# Inbound media still pending this long (its job was never published or
# lost) is queued again by beat.
WHATSAPP_MEDIA_REDRIVE_AFTER_SECONDS = env.int(
    "WHATSAPP_MEDIA_REDRIVE_AFTER_SECONDS", default=120
)
WHATSAPP_OUTBOUND_REDRIVE_AFTER_SECONDS = env.int(
    "WHATSAPP_OUTBOUND_REDRIVE_AFTER_SECONDS", default=300
)
# The "a drain job is queued or running" flag outlives a dead job by this much.
WHATSAPP_WEBHOOK_DRAIN_FLAG_SECONDS = env.int(
    "WHATSAPP_WEBHOOK_DRAIN_FLAG_SECONDS", default=30
)

# --- Webhook ingest (issue 17) -------------------------------------------------
# Concurrent webhooks of one web process share one INSERT and one commit; a
# commit in preparation waits at most this long for requests still being
# verified (a request that is alone never waits).
WEBHOOK_GROUP_COMMIT_WINDOW_SECONDS = env.float(
    "WEBHOOK_GROUP_COMMIT_WINDOW_SECONDS", default=0.002
)
# The drain's linger adapts between these bounds: no wait while batches come
# back nearly empty (moderate load: latency first), up to the maximum while
# they fill (bursts: fuller batches).
WHATSAPP_WEBHOOK_DRAIN_LINGER_MIN_SECONDS = env.float(
    "WHATSAPP_WEBHOOK_DRAIN_LINGER_MIN_SECONDS", default=0.005
)
# An event claimed by this many drains that never finished it (the worker
# died on it) is quarantined instead of being claimed again.
WHATSAPP_WEBHOOK_MAX_CLAIMS = env.int("WHATSAPP_WEBHOOK_MAX_CLAIMS", default=3)

# --- E-mail re-drive (issue 7, found by the soak) -----------------------------
# Beat re-queues e-mails still queued and untouched after this long (their
# enqueue failed in a broker outage, or their job was lost), at most this many
# per run.
EMAIL_REDRIVE_AFTER_SECONDS = env.int("EMAIL_REDRIVE_AFTER_SECONDS", default=600)
EMAIL_REDRIVE_BATCH = env.int("EMAIL_REDRIVE_BATCH", default=500)

# --- Several beats (issue 14) -------------------------------------------------
# Only the beat holding the lease on the broker's Redis sends periodic tasks;
# another takes over this long after it dies (queues/beat_leader.py).
BEAT_LEASE_SECONDS = env.float("BEAT_LEASE_SECONDS", default=15.0)
# Beat queues again reminder rows still queued this long after their job was
# published (the publish was lost: a broker flushed or failed over).
REMINDER_REQUEUE_AFTER_SECONDS = env.int("REMINDER_REQUEUE_AFTER_SECONDS", default=900)
