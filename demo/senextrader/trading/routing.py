"""WebSocket routes."""

from django.urls import path

from trading.consumers import PositionConsumer

websocket_urlpatterns = [path("ws/positions/<int:user_id>/", PositionConsumer.as_asgi())]
