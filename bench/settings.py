"""Settings for benchmarks: the product's, plus the floor view's URL."""

from saas.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
