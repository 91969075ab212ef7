"""Integrations with the frameworks of the stack Senex Scale scales (Django, Celery, Channels).

Nothing in ``senex_scale.core`` or ``senex_scale.policy`` may import from here (an
import-linter contract): these modules are for the application side, installed with extras.
"""
