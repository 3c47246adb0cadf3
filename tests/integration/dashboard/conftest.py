"""A small village of real node processes (gateway, buyer house1, seller house2 with mock
meters and a valve) with the dashboard on both houses, and a headless Chromium to drive it.

One village per module: it takes most of the module's time (chain, wallets, a channel, the
first microgrid payments), and the browser tests read it in their declared order.
Screenshots go to ``$ESCHATON_SCREENSHOTS`` when set (``docs/dashboard`` to refresh the docs'
pictures), else to the test's temporary directory.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eschaton.demo.story import Story
from eschaton.demo.village import House, stop_all
from tests.conftest import need_tool
from tests.integration.microgrid.conftest import small_village

PASSWORD = "pump house 2"
# A lock-out long enough that a loaded CI machine still tries the right password inside it.
DASHBOARD = '[dashboard]\nenabled = true\nlisten = "127.0.0.1:0"\nlogin_lock_s = 10.0\n\n'


def url_of(h: House) -> str:
    return (h.datadir / "dashboard.url").read_text().strip()


def token_of(h: House) -> str:
    return (h.datadir / "api.token").read_text().strip()


def set_password(h: House, password: str) -> None:
    """Through the CLI, as an installer would."""
    root = Path(__file__).resolve().parents[3]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "firmware"), str(root)]))
    p = subprocess.run([sys.executable, "-m", "eschaton", "dashboard", "password", "--config", str(h.config)],
                       input=password + "\n", capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def village(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    houses, sales = small_village()
    for h in houses:
        if h.name != "gateway":
            h.extra_toml = DASHBOARD
    story = Story(tmp_path_factory.mktemp("village"), 600.0, lambda s: None, houses=(houses, sales))
    try:
        async def up() -> None:
            await story.setup()
            meter = sales[0].meter

            async def paid() -> bool:
                return bool(story.sell_row(meter).get("paid_sat", 0) > 0)

            await story.until("first payments", paid, 40)

        asyncio.run(up())
        set_password(story.by["house2"], PASSWORD)
        yield story
    finally:
        stop_all(story.houses)


def call(h: House, command: str, /, **params: Any) -> Any:
    """The node's API (the valve commands take a parameter called ``name``)."""
    from eschaton.api.client import call_async

    return asyncio.run(call_async(h.datadir, command, params, timeout=60.0))


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("ESCHATON_SCREENSHOTS")
    d = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    chromium = need_tool("chromium")
    driver_path = need_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    opts = Options()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,900", "--no-first-run", "--disable-extensions",
              f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    d = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    d.downloads = downloads  # type: ignore[attr-defined]
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()
