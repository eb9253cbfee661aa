"""Settings for every Hubbub component: one typed object, built once at start-up."""

from config.logging import configure_logging
from config.settings import Settings, load_settings, resolve_secret

__all__ = ["Settings", "configure_logging", "load_settings", "resolve_secret"]
