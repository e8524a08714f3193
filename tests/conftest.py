"""Shared test settings: Hypothesis profile (deterministic, no deadline)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "tqref", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
settings.load_profile("tqref")
