"""APScheduler 3.x wiring: a few fixed, named jobs that start and stop with the app."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Optional

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from scheduler.clock import Clock
from scheduler.jobs import JOBS, JobDeps

log = logging.getLogger(__name__)


class UnknownJob(KeyError):
    """No job has that name."""


class JobScheduler:
    """Owns the APScheduler instance; jobs take `now` from the injected clock."""

    def __init__(self, *, deps: JobDeps, clock: Clock) -> None:
        self.deps = deps
        self.clock = clock
        self.timezone = deps.settings.default_timezone
        self._scheduler: Optional[AsyncIOScheduler] = None

    def start(self) -> None:
        """Register every job by name and start the scheduler on the running event loop."""
        scheduler = AsyncIOScheduler(timezone=self.timezone)
        for spec in JOBS.values():
            scheduler.add_job(self.run, CronTrigger(timezone=self.timezone, **spec.cron),
                              args=[spec.name], id=spec.name, name=spec.name,
                              coalesce=True, max_instances=1, misfire_grace_time=3600)
        scheduler.start()
        self._scheduler = scheduler
        log.info("scheduler started with jobs: %s", ", ".join(JOBS))

    def shutdown(self) -> None:
        """Stop scheduling; a job already running finishes on its own."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def job_ids(self) -> list[str]:
        """The names of the jobs the running scheduler holds."""
        return [job.id for job in self._scheduler.get_jobs()] if self._scheduler else []

    async def run(self, name: str, at: Optional[datetime] = None) -> str:
        """Run one job now, or as of `at`; returns its one-line summary."""
        spec = JOBS.get(name)
        if spec is None:
            raise UnknownJob(name)
        now = at or self.clock.now()
        try:
            result = await spec.func(self.deps, now)
        except Exception:
            log.exception("job %s failed (as of %s)", name, now.isoformat())
            raise
        log.info("job %s: %s", name, result)
        return result
