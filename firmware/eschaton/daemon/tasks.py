"""Background tasks a service owns: each one logged if it fails, none of them able to stop the
others, and all of them held in one set so the service's ``stop()`` can cancel and await them."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


def spawn_supervised(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, Any], log: logging.Logger,
                     what: str) -> None:
    """Run ``coro`` as a task kept in ``tasks`` until it ends; an exception is logged with
    ``what`` (supervision boundary: one request's failure must not stop the service)."""
    async def run() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:  # supervision boundary: one task's failure must not stop the rest
            log.exception("%s failed", what)
    t = asyncio.get_running_loop().create_task(run())
    tasks.add(t)
    t.add_done_callback(tasks.discard)
