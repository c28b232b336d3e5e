"""When assets refresh by themselves (declarative automation), and the policies behind it."""

import os

import dagster as dg
from pydantic import Field

from .profiles import active_profile

# Re-materialize what exists once anything upstream changed, after upstream is complete and
# idle. Unlike eager(), a partition never materialized (say the 'full' target) stays so:
# automation keeps results current, it does not start new, expensive ones.
#
# shard_inventory is an observable source asset: it counts as "missing" until first observed
# (no shard ever arrived), which must not hold back the pool forever.
REFRESH = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.missing()
    & ~dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets("shard_inventory"))
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("refresh_when_upstream_changes")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


class RetrainPolicy(dg.ConfigurableResource):
    """When the proxy is retrained on the grown pool; it never retrains by itself otherwise.

    Either new rows reach ``new_data_share`` of the pool (proxy_retrain_sensor), or the cron
    ``cron`` ticks (proxy_retrain_schedule, off until switched on in the UI).
    """

    new_data_share: float = Field(0.25, description="Retrain once unseen rows are this share.")
    cron: str = Field(default_factory=lambda: _env("S2L_PROXY_RETRAIN_CRON", "0 2 * * 0"))

    def describe(self) -> dict:
        return {
            "new_data_share": self.new_data_share,
            "cron": self.cron,
            "profile": active_profile(),
            "sensor": "proxy_retrain_sensor",
            "schedule": "proxy_retrain_schedule",
        }


def reselect_cron() -> str:
    return _env("S2L_RESELECT_CRON", "0 3 * * *")
