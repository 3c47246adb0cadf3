"""``eschaton demo``: an emulated village on this machine (what ``make demo`` runs)."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from eschaton.cli.args import seconds
from eschaton.cli.main import add_common
from eschaton.errors import LocalError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run the village demo: houses trading water and power")
    p.add_argument("--duration", type=seconds(0, 86_400), default=150.0,
                   help="upper bound on the whole run in seconds (default 150; the story takes ~90)")
    p.add_argument("--keep", action="store_true", help="keep the demo data directory afterwards")
    p.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    add_common(p)
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> Any:
    from eschaton.demo.story import Story
    from eschaton.demo.view import View, summary
    from eschaton.demo.village import DemoError, clean

    if args.duration < 30:
        raise LocalError("--duration must be at least 30 seconds")
    base = Path(args.datadir) if args.datadir else Path.cwd() / "demo-data"
    if base.exists() and any(base.iterdir()) and not (base / "chain").exists():
        raise LocalError(f"{base} exists and is not a demo data directory; pass --datadir")
    clean(base)
    base.mkdir(parents=True)
    view = View(tty=False if args.plain else None)
    story = Story(base, args.duration, view)
    ok = interrupted = False
    try:
        asyncio.run(story.run())
        ok = all(good for _, good in story.checks) and bool(story.checks)
    except KeyboardInterrupt:
        interrupted = True
        story.log.append((story.elapsed(), "interrupted (Ctrl-C); every node was stopped"))
    except DemoError as e:
        story.log.append((story.elapsed(), f"stopped early: {e}"))
    finally:
        for line in summary(story):
            print(line)
        if not args.keep:
            clean(base)
        else:
            print(f"demo data kept in {base}")
    sys.stdout.flush()
    if interrupted:
        raise KeyboardInterrupt  # exit status 130, like any interrupted command
    if not ok:
        raise LocalError("the demo did not complete its story (see above; node logs with --keep)")
    return None
