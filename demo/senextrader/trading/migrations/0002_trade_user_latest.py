"""The index behind "a user's latest trades" (``services.latest_trades_of``): without it the
query reads every trade of every user (``user_id`` had no index), once per WebSocket connect."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("trading", "0001_initial")]

    operations = [
        migrations.AddIndex(
            model_name="trade",
            index=models.Index(
                fields=["user_id", "-created_at", "-id"], name="idx_trade_user_latest"
            ),
        ),
    ]
