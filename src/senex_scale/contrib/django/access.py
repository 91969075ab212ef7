"""Who may read ``/ready/`` and ``/metrics``: the host's and the LAN's probes, not the public.

Both endpoints describe the inside of the deployment (database and broker health, request
rates, replica lag) and ``/ready/`` does real work per request, so they answer only:

- a client connecting straight to the instance from an address in ``ALLOW`` (default:
  loopback and the private networks: Prometheus, the controller, the balancer's checks), and
  whose request did not come through a proxy: a request carrying ``Forwarded``,
  ``X-Forwarded-For`` or ``X-Real-IP`` came through nginx or HAProxy (the rendered configs
  add them) from anyone on the internet, even though the proxy connects from 127.0.0.1;
- or anyone with ``Authorization: Bearer TOKEN`` when ``TOKEN_ENV`` names an environment
  variable holding a token (compared in constant time).

Everyone else gets ``403``. Settings (all optional)::

    SENEX_SCALE_ENDPOINTS = {
        "ALLOW": ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
                  "192.168.0.0/16", "fc00::/7"],   # networks served without a token
        "TOKEN_ENV": None,      # environment variable with a bearer token accepted from anywhere
        "READY_TTL": 2.0,       # seconds a readiness result is reused (a flood is one probe)
        "DETAIL": False,        # True: /ready/ shows the checks' raw errors (host names, ports)
    }
"""

from __future__ import annotations

import functools
import hmac
import inspect
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from senex_scale.errors import InputError

SETTING = "SENEX_SCALE_ENDPOINTS"
DEFAULT_ALLOW = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)
PROXY_HEADERS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP")
"""Request headers (Django ``META`` names) that only a proxy in front of the app adds."""

F = TypeVar("F", bound=Callable[..., Any])
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EndpointConfigError(InputError):
    """``SENEX_SCALE_ENDPOINTS`` is invalid; the message names the key."""


@dataclass(frozen=True)
class EndpointConfig:
    """``SENEX_SCALE_ENDPOINTS``, validated."""

    allow: tuple[Network, ...]
    token_env: str | None = None
    ready_ttl: float = 2.0
    """Seconds a readiness result is reused."""
    detail: bool = False

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any] | None) -> EndpointConfig:
        """Validate the setting; every problem names ``SENEX_SCALE_ENDPOINTS["KEY"]``."""
        raw = dict(raw or {})
        problems = [
            f'{SETTING}["{key}"]: unknown key'
            for key in sorted(set(raw) - {"ALLOW", "TOKEN_ENV", "READY_TTL", "DETAIL"})
        ]
        allow: list[Network] = []
        given = raw.get("ALLOW", DEFAULT_ALLOW)
        if isinstance(given, str) or not isinstance(given, list | tuple):
            problems.append(f'{SETTING}["ALLOW"]: must be a list of networks ("10.0.0.0/8")')
            given = ()
        for index, item in enumerate(given):
            try:
                allow.append(ipaddress.ip_network(str(item), strict=False))
            except ValueError:
                problems.append(f'{SETTING}["ALLOW"][{index}]: {item!r} is not a network')
        token_env = raw.get("TOKEN_ENV")
        if token_env is not None and (
            not isinstance(token_env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env)
        ):
            problems.append(f'{SETTING}["TOKEN_ENV"]: {token_env!r} is not a variable name')
            token_env = None
        ttl = raw.get("READY_TTL", 2.0)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 3600:
            problems.append(f'{SETTING}["READY_TTL"]: {ttl!r} must be seconds in (0, 3600]')
            ttl = 2.0
        detail = raw.get("DETAIL", False)
        if not isinstance(detail, bool):
            problems.append(f'{SETTING}["DETAIL"]: {detail!r} is not True or False')
            detail = False
        if problems:
            body = "\n".join(f"  {p}" for p in problems)
            raise EndpointConfigError(f"{SETTING}: {len(problems)} problem(s)\n{body}")
        return cls(tuple(allow), token_env, float(ttl), detail)


def endpoint_config() -> EndpointConfig:
    """The current setting (read each time: a small dict; tests override settings)."""
    from django.conf import settings

    return EndpointConfig.from_settings(getattr(settings, SETTING, None))


def allowed(request: Any, config: EndpointConfig) -> bool:
    """May this request read the private endpoints? (see the module docstring)"""
    if config.token_env is not None:
        token = os.environ.get(config.token_env) or ""
        given = str(request.META.get("HTTP_AUTHORIZATION", ""))
        if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
    if any(request.META.get(header) for header in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(str(request.META.get("REMOTE_ADDR") or ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in config.allow)


def forbidden() -> Any:
    """The answer to everyone else: no detail."""
    from django.http import HttpResponse

    response = HttpResponse("forbidden\n", status=403, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


def internal(view: F) -> F:
    """Serve ``view`` (a function view, sync or async) only to ``allowed`` callers."""
    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_guarded(request: Any, *args: Any, **kwargs: Any) -> Any:
            if not allowed(request, endpoint_config()):
                return forbidden()
            return await view(request, *args, **kwargs)

        return cast(F, async_guarded)

    @functools.wraps(view)
    def guarded(request: Any, *args: Any, **kwargs: Any) -> Any:
        if not allowed(request, endpoint_config()):
            return forbidden()
        return view(request, *args, **kwargs)

    return cast(F, guarded)
