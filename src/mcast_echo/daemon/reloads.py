"""What the reloads have been: how many, how many failed, the last one's time and outcome.

Kept whether or not metrics are on (a reload may turn them on); the metrics endpoint
reads it when scraped. Start-up counts as the first successful load, as Prometheus'
own ``*_config_last_reload_successful`` does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ReloadHistory:
    attempts: int = 0
    failures: int = 0
    last_success: bool = True
    last_time: float = field(default_factory=time.time)  # Unix time of the last load

    def record(self, success: bool) -> None:
        self.attempts += 1
        self.failures += not success
        self.last_success = success
        self.last_time = time.time()
