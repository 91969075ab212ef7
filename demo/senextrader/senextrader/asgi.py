"""The ASGI application Daphne serves: HTTP through Django, WebSockets through Channels.

``daphne -b 127.0.0.1 -p 8001 senextrader.asgi:application``. WebSocket connections are
counted per instance (``senex_websocket_connections``) and each starts without a
read-your-writes pin of its own. ``WebSocketControl`` answers the controller on
``/senex/websockets/``: its open connections, and closing some with 1012 on a drain or to
rebalance (docs/websockets.md).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "senextrader.settings")
django_asgi_app = get_asgi_application()  # before importing anything that uses models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from trading.routing import websocket_urlpatterns  # noqa: E402

from senex_scale.contrib.django.metrics import WebSocketGauge  # noqa: E402
from senex_scale.contrib.django.router import PinScopeMiddleware  # noqa: E402
from senex_scale.contrib.django.websockets import WebSocketControl  # noqa: E402

application = WebSocketControl(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": WebSocketGauge(
                PinScopeMiddleware(AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)))
            ),
        }
    )
)
