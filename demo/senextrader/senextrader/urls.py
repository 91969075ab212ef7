"""URLs: the positions API, health and metrics."""

from django.urls import path
from trading import views

from senex_scale.contrib.django.health import ReadinessView, liveness
from senex_scale.contrib.django.metrics import metrics_view

urlpatterns = [
    path("api/positions/<int:user_id>/", views.positions, name="positions"),
    path("api/quotes/<str:symbol>/", views.quote, name="quote"),
    path("api/trades/", views.trades, name="trades"),
    path("api/trades/latest/<int:user_id>/", views.latest_trades, name="latest-trades"),
    path("api/trades/async/", views.trades_async, name="trades-async"),
    path("api/accounts/<int:user_id>/recalculate/", views.recalculate, name="recalculate"),
    path("health/", liveness, name="liveness"),
    path("ready/", ReadinessView.as_view(), name="readiness"),
    path("metrics", metrics_view, name="metrics"),
]
