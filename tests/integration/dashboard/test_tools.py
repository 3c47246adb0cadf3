"""The microgrid contracts view and the installer tools in headless Chromium, against their own
village (mock meters, real channel, real chain): a contract's price, credit gauge and invoices,
a cut and a reconnection arriving live; the pin test on the gpiozero MockFactory, a calibration
run while pulses flow, and the config check of a pasted config and of a bad file, each problem
one line with file, line and key. Screenshots as in ``test_browser.py``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eschaton.demo.story import Story
from tests.integration.dashboard.conftest import PASSWORD, call, url_of
from tests.integration.dashboard.test_browser import click_confirmed, login, shoot, wait
from tests.integration.microgrid.conftest import CREDIT_SAT, PRICE_MSAT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

FREE_PIN = 5  # on no meter, valve or relay of the village's houses


def _submit(d: Any, form_css: str, confirm: bool = False, unconfirmed: bool = False, **fields: str) -> str:
    """Fill a form, send it, wait for the answer's page (the old page gone, the new one loaded)
    and return its flash line."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    form = d.find_element(By.CSS_SELECTOR, form_css)
    for k, v in fields.items():
        el = form.find_element(By.NAME, k)
        el.clear()
        el.send_keys(v)
    page = d.find_element(By.TAG_NAME, "html")
    if unconfirmed:  # form.submit() skips the page's confirmation: as a script or old browser would
        d.execute_script("document.querySelector(arguments[0]).submit()", form_css)
    elif confirm:
        click_confirmed(d, form_css)
    else:
        form.find_element(By.TAG_NAME, "button").click()
    WebDriverWait(d, 30).until(ec.staleness_of(page))
    WebDriverWait(d, 30).until(lambda drv: drv.execute_script("return document.readyState") == "complete")
    return str(d.find_element(By.ID, "flash").text)


def _events_text(d: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(d.find_element(By.ID, "mg").text)


def test_the_microgrid_view_shows_contracts_and_a_cut_arrives_live(
        village: Story, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    d, seller, buyer = browser, village.by["house2"], village.by["house1"]
    meter = village.sales[0].meter
    url = url_of(seller)
    login(d, url, PASSWORD)
    d.get(url + "/microgrid")
    card = d.find_element(By.ID, f"contract-sell-{meter}")
    assert f"{PRICE_MSAT} msat per" in card.text
    gauge = d.find_element(By.ID, f"credit-{meter}")
    assert int(float(gauge.get_attribute("max"))) == CREDIT_SAT
    row = next(r for r in call(seller, "microgrid.status")["sell"] if r["meter"] == meter)
    assert row["invoices"] > 0 and row["supply"] == "on"
    assert d.find_elements(By.CSS_SELECTOR, "#mg tr td[data-k=cum_due_sat]")  # the latest invoices
    d.execute_script("window.stillHere = true")  # gone if the page were reloaded
    mg = d.find_element(By.ID, "mg")
    # Invoices and payments keep coming: the page redraws itself from the event stream.
    wait(lambda: int(mg.get_attribute("data-redraws") or 0) >= 1, "a live redraw")
    shoot(d, shots, "microgrid")

    call(buyer, "microgrid.hold", meter=meter, paused=True)  # the buyer stops paying
    wait(lambda: "cut" in _events_text(d).split(), "the cut on the page", timeout=60)
    used = int(d.find_element(By.CSS_SELECTOR, f"#contract-sell-{meter} [data-k=credit_used]").text)
    assert used > 0  # the unpaid credit that made the seller cut
    assert "supply cut" in d.find_element(By.ID, f"contract-sell-{meter}").text
    shoot(d, shots, "microgrid-cut")
    assert "reconnected" not in _events_text(d).split()  # the first "on" is a connection
    call(buyer, "microgrid.hold", meter=meter, paused=False)
    wait(lambda: "reconnected" in _events_text(d).split(), "the reconnection on the page", timeout=60)
    assert d.execute_script("return window.stillHere") is True  # all of it without a reload


def test_the_pin_test_reads_and_toggles_pins_on_the_mock(village: Story, browser: Any) -> None:
    d, seller = browser, village.by["house2"]
    meter, valve = village.sales[0].meter, village.sales[0].cut
    url = url_of(seller)
    login(d, url, PASSWORD)
    d.get(url + "/tools")
    assert "pin-read" in d.page_source, d.page_source[-3000:]  # the page drew its tools
    flash = _submit(d, "form.pin-read", pin="17")  # the sold meter's input
    assert "pin.read: done" in flash and "gpio 17" in flash and f"owner {meter}" in flash, flash

    flash = _submit(d, "form.pin-toggle", confirm=True, pin=str(FREE_PIN))
    assert "pin.toggle: done" in flash and "high True" in flash, flash
    assert call(seller, "pin.read", pin=str(FREE_PIN)) == {"gpio": FREE_PIN, "high": True, "owner": "pin test"}
    flash = _submit(d, "form.pin-toggle", confirm=True, pin=str(FREE_PIN))
    assert "high False" in flash, flash
    assert call(seller, "pin.read", pin=str(FREE_PIN))["high"] is False

    # A pin a valve holds is refused, naming its holder; the valve is untouched.
    pins = next(v for v in call(seller, "valve.list") if v["name"] == valve)
    flash = _submit(d, "form.pin-toggle", confirm=True, pin="23")
    assert "pin.toggle:" in flash and "is used by" in flash and "done" not in flash, flash
    assert next(v for v in call(seller, "valve.list") if v["name"] == valve) == pins
    # Without the confirmation, nothing happens.
    flash = _submit(d, "form.pin-toggle", unconfirmed=True, pin=str(FREE_PIN))
    assert "not confirmed" in flash and call(seller, "pin.read", pin=str(FREE_PIN))["high"] is False


def test_a_calibration_run_while_pulses_flow(village: Story, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    d, seller = browser, village.by["house2"]
    meter = village.sales[0].meter
    login(d, url_of(seller), PASSWORD)
    d.get(url_of(seller) + "/tools")
    flash = _submit(d, f"#cal-{meter} form.cal-start")
    assert "meter.calibrate: done" in flash and "start_pulses" in flash, flash
    since = d.find_element(By.CSS_SELECTOR, f'[data-cal-since="{meter}"]')
    wait(lambda: int(since.text) >= 100, "pulses counted since the start, live", timeout=60)
    shoot(d, shots, "tools")
    st = call(seller, "meter.calibrate", name=meter, step="status")
    nominal = st["nominal_counts_per_unit"]
    pulses = st["pulses_now"] - st["start_pulses"]
    # The installer read the quantity off a vessel: here, what the nominal factor says passed.
    flash = _submit(d, f"#cal-{meter} form.cal-finish", quantity=f"{pulses / nominal:.4f}")
    assert "meter.calibrate: done" in flash and "counts_per_unit" in flash, flash
    assert f'name = "{meter}"' in flash  # the config line to make it the nominal value
    assert call(seller, "meter.calibrate", name=meter, step="status")["running"] is False
    stored = seller.datadir / "metering" / "calibration.json"
    if stored.exists():  # where the metering state lives by default
        assert meter in stored.read_text()


def test_the_config_check_names_file_line_and_key(village: Story, browser: Any, shots: Path) -> None:
    d, seller = browser, village.by["house2"]
    login(d, url_of(seller), PASSWORD)
    d.get(url_of(seller) + "/tools")
    flash = _submit(d, "form.check-file")
    assert "config.check: done" in flash and "ok True" in flash, flash
    flash = _submit(d, "form.check-text", text='[node]\ndatadir = "/tmp/x"\n[chain]\nblock_interval_s = -1\n')
    assert "pasted:4: chain.block_interval_s: must be a number" in flash, flash
    assert "block_interval_s = -1" not in seller.log.read_text()  # a pasted config is not journalled
    # The node's own file, broken on disk (as an installer's edit might): file:line: key.
    good = seller.config.read_text()
    head = good + "\n[channel]\n"
    seller.config.write_text(head + "turn_dwell_ms = -5\n")
    try:
        flash = _submit(d, "form.check-file")
    finally:
        seller.config.write_text(good)
    want = f"{seller.config}:{head.count(chr(10)) + 1}: channel.turn_dwell_ms: must be an integer"
    assert want in flash, (want, flash)
    shoot(d, shots, "tools-check")
