"""The stages as the scheduler calls them: configuration in (and the month), counts out.

Each opens what it needs (store, intake, drop) and calls the stage; the stages themselves stay
in the modules named for what they hold.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any

from .config import Config
from .store import open_store


def pickup_inbox(cfg: Config) -> Any:
    from . import intake

    stage = intake.open_intake(cfg)
    with closing(stage.conn):
        return intake.pickup_inbox(stage, cfg.intake.inbox, cfg.intake.stable_seconds)


def export_queue(cfg: Config) -> Any:
    from .queue_export import export_queue as export

    return export(cfg)


def pull_returns(cfg: Config) -> Any:
    from .returns_pull import pull_returns as pull

    return pull(cfg)


def reconcile_month(cfg: Config, month: str) -> Any:
    from .month_close import reconcile_month as reconcile

    return reconcile(cfg, month)


def dispatch_packets(cfg: Config) -> Any:
    from .signoff import dispatch_packets as dispatch

    with closing(open_store(cfg.store.path)) as conn:
        return dispatch(cfg, conn)


def close_month(cfg: Config, month: str) -> Any:
    from .billing import close_month as close

    with closing(open_store(cfg.store.path)) as conn:
        return close(cfg, conn, month)
