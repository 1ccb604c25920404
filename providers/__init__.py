"""Providers deliver a rendered notification on one channel.

The interface lives in :mod:`providers.base`; each vendor is one module here,
looked up by name through :data:`REGISTRY` and imported only when used, so an
unused vendor SDK never loads.
"""

from __future__ import annotations

import importlib

from providers.base import Provider

#: provider name -> "module:Class", imported late.
REGISTRY: dict[str, str] = {
    "apns": "providers.apns:APNsProvider",
    "fcm": "providers.fcm:FCMProvider",
    "gateway": "providers.gateway:GatewayProvider",
    "log": "providers.log:LogProvider",
    "noop": "providers.noop:NoopProvider",
    "sendgrid": "providers.sendgrid:SendGridProvider",
    "smtp": "providers.smtp:SmtpProvider",
    "twilio": "providers.twilio:TwilioProvider",
}


def load_provider(name: str) -> type[Provider]:
    """The provider class registered under ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r} (known: {', '.join(sorted(REGISTRY))})") from None
    module_name, _, class_name = target.partition(":")
    provider: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return provider
