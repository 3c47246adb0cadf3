"""The dashboard in headless Chromium against a real village (mock meters, real channel, real
chain): log in, watch the live plot while water flows, close the valve and see the meter stop,
pay over a channel, export the ledger; a wrong password is refused and rate-limited; a
cross-site POST is refused. The tests share one village and one browser, in this order."""
from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from eschaton.demo.story import Story
from tests.integration.dashboard.conftest import PASSWORD, call, token_of, url_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PHONE = (390, 844)
DESKTOP = (1280, 900)


def wait(fn: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # an element not there yet: keep waiting until the deadline
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def login(d: Any, url: str, password: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    d.get(url + "/login")
    d.delete_all_cookies()
    d.find_element(By.ID, "password").send_keys(password)
    page = d.find_element(By.TAG_NAME, "html")
    d.find_element(By.ID, "login-button").click()
    # A click does not wait for the answer's page: read nothing from the login page just left.
    WebDriverWait(d, 30).until(EC.staleness_of(page))
    WebDriverWait(d, 30).until(lambda drv: drv.execute_script("return document.readyState") == "complete")


def shoot(d: Any, shots: Path, name: str) -> None:
    for label, (w, h) in (("desktop", DESKTOP), ("phone", PHONE)):
        d.set_window_size(w, h)
        time.sleep(0.3)  # let the layout (and uPlot's resize) settle before the picture
        d.save_screenshot(str(shots / f"{name}-{label}.png"))
    d.set_window_size(*DESKTOP)


def click_confirmed(d: Any, form_css: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    d.find_element(By.CSS_SELECTOR, form_css + " button").click()
    WebDriverWait(d, 5).until(ec.alert_is_present())
    d.switch_to.alert.accept()


def test_log_in_watch_the_live_plot_then_close_the_valve_and_the_meter_stops(
        village: Story, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    d, seller = browser, village.by["house2"]
    meter, valve = village.sales[0].meter, village.sales[0].cut
    url = url_of(seller)
    assert url.startswith("http://127.0.0.1:")  # loopback unless configured otherwise
    login(d, url, PASSWORD)
    wait(lambda: d.current_url == url + "/", "the node page after login")
    assert seller.node_id in d.page_source and "house2" in d.title
    shoot(d, shots, "node")

    d.get(url + "/meters")
    plot = d.find_element(By.CSS_SELECTOR, f'.plot[data-meter="{meter}"]')
    first = wait(lambda: int(plot.get_attribute("data-points") or 0), "the plot's first points")
    # Live: points arrive over the event stream while the pulses flow, with a positive rate.
    wait(lambda: int(plot.get_attribute("data-points") or 0) >= first + 3, "new points on the plot")
    assert float(plot.get_attribute("data-last") or 0) > 0
    total = d.find_element(By.CSS_SELECTOR, f'[data-meter-total="{meter}"]')
    t0 = float(total.text)
    wait(lambda: float(total.text) > t0, "the total to grow")
    assert d.find_element(By.CSS_SELECTOR, f".plot[data-meter='{meter}'] canvas")  # uPlot drew
    shoot(d, shots, "meters")

    d.get(url + "/valves")
    row = f"#valve-{valve}"
    assert d.find_element(By.CSS_SELECTOR, row + ' [data-k="state"]').text == "open"
    shoot(d, shots, "valves")
    click_confirmed(d, row + " form")
    wait(lambda: "valve.close: done" in d.find_element(By.ID, "flash").text, "the close to be done")
    assert d.find_element(By.CSS_SELECTOR, row + ' [data-k="state"]').text == "closed"
    assert next(v for v in call(seller, "valve.list") if v["name"] == valve)["open"] is False

    d.get(url + "/meters")
    total = d.find_element(By.CSS_SELECTOR, f'[data-meter-total="{meter}"]')

    def stopped() -> bool:
        before = total.text
        time.sleep(1.5)  # more than one sample: a flowing meter moves in that time
        return bool(before) and total.text == before

    wait(stopped, "the meter to stop")
    m = next(x for x in call(seller, "meter.list") if x["name"] == meter)
    assert f'{m["total"]:.6g}' == total.text


def test_metrics_parse_and_match_the_api(village: Story) -> None:
    from urllib.request import Request, urlopen

    from prometheus_client.parser import text_string_to_metric_families

    seller = village.by["house2"]
    url, token = url_of(seller), token_of(seller)

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        req = Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        with urlopen(req, timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = r.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def consistent() -> tuple[Any, ...] | None:
        # Payments and meters move while the village runs: compare a scrape taken between two
        # identical API reads.
        def read() -> tuple[Any, ...]:
            totals = [{"name": x["name"], "unit": x["unit"], "total": x["total"]}
                      for x in call(seller, "meter.list")]
            return call(seller, "channel.list"), totals, call(seller, "node.status")["chain"]["height"]

        a = read()
        m = scrape()
        b = read()
        if a != b:
            raise AssertionError(f"moved: {[(x, y) for x, y in zip(a, b, strict=True) if x != y]}")
        return a, m

    (chans, meters, chain), m = wait(consistent, "a quiet moment to compare", timeout=30)
    assert m[("eschaton_chain_height", ())] == chain
    assert chans
    for c in chans:
        cid, peer = c["channel"][:16], c["peer"][:16]
        assert m[("eschaton_channel_balance_sat", (("channel", cid), ("peer", peer), ("side", "local")))] \
            == c["local_sat"]
        assert m[("eschaton_channel_balance_sat", (("channel", cid), ("peer", peer), ("side", "remote")))] \
            == c["remote_sat"]
        assert m[("eschaton_channel_switches_left", (("channel", cid),))] == c["switches_left"]
    for x in meters:
        assert m[("eschaton_meter_total", (("meter", x["name"]), ("unit", x["unit"])))] == pytest.approx(x["total"])
    for v in call(seller, "valve.list"):
        assert m[("eschaton_valve_open", (("valve", v["name"]),))] == (1.0 if v["open"] else 0.0)
    received = [e for e in call(seller, "events.since", seq=0, limit=1000, source="payments")["events"]
                if e["kind"] == "PaymentReceived"]
    assert m[("eschaton_payments_total", (("outcome", "received"),))] >= len(received) > 0
    assert m[("process_resident_memory_bytes", ())] > 10e6
    linked = [p for p in call(seller, "peer.list") if p.get("linked") and p.get("rtt_ms") is not None]
    for p in linked:
        assert ("eschaton_link_rtt_seconds", (("peer", p["id"][:16]), ("transport", "tcp"))) in m
    # Without the token (and without a session) there are no metrics.
    from urllib.error import HTTPError

    with pytest.raises(HTTPError) as e:
        urlopen(url + "/metrics", timeout=10)
    assert e.value.code == 401


def test_export_the_ledger_as_csv(village: Story, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    d, seller = browser, village.by["house2"]
    before = call(seller, "microgrid.ledger", role="seller")
    assert before, "the seller has invoiced by now"
    d.get(url_of(seller) + "/ledger?role=seller")
    shoot(d, shots, "ledger")
    d.find_element(By.ID, "csv").click()
    path = d.downloads / "ledger-seller.csv"
    wait(path.exists, "the CSV download")
    after = call(seller, "microgrid.ledger", role="seller")
    rows = wait(lambda: list(csv.DictReader(path.open())), "the CSV's rows")
    # Every entry the API lists (the ledger only grows: between its reads before and after).
    assert len(before) <= len(rows) <= len(after)
    for got, want in zip(rows, after, strict=False):
        # One column per key of any entry; an entry without that key has an empty cell.
        assert got == {k: "" if want.get(k) is None else str(want[k]) for k in got}, (got, want)
        assert set(want) <= set(got)


def test_pay_over_a_channel(village: Story, browser: Any, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    d, buyer, seller = browser, village.by["house1"], village.by["house2"]
    url = url_of(buyer)
    login(d, url, token_of(buyer))  # no password set on house1: its API token logs in
    wait(lambda: d.current_url == url + "/", "the node page after login")
    d.get(url + "/channels")
    ch = next(c for c in call(buyer, "channel.list") if c["peer"] == seller.node_id)
    shoot(d, shots, "channels")
    form = d.find_element(By.CSS_SELECTOR, f'#ch-{ch["channel"]} form.pay')
    pid = form.find_element(By.NAME, "id").get_attribute("value")
    form.find_element(By.NAME, "amount").send_keys("1234")
    form.find_element(By.TAG_NAME, "button").click()
    flash = wait(lambda: d.find_element(By.ID, "flash").text, "the payment's outcome")
    assert "channel.pay: done" in flash and "complete" in flash, flash
    rec = call(buyer, "channel.payment", id=pid)
    assert rec["amount"] == 1234 and rec["state"] == "complete" and rec["channel"] == ch["channel"]
    d.get(url + "/payments?state=complete")
    assert d.find_element(By.ID, f"pay-{pid}")
    # The seller got it (its own payments facade saw the payment arrive).
    got = call(seller, "events.since", seq=0, limit=1000, source="payments")["events"]
    assert any(e["kind"] == "PaymentReceived" and e["amount"] == 1234 for e in got)


class _Attacker(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        page = (f'<html><body><form id="f" method="post" action="{self.target}">'
                '<input name="name" value="x"><input name="confirm" value="yes"></form>'
                '<script>document.getElementById("f").submit()</script></body></html>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def attacker() -> Iterator[tuple[ThreadingHTTPServer, type[_Attacker]]]:
    handler = type("Attacker", (_Attacker,), {})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv, handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_cross_site_post_is_refused(village: Story, browser: Any,
                                      attacker: tuple[ThreadingHTTPServer, type[_Attacker]]) -> None:
    from selenium.webdriver.common.by import By

    d, seller = browser, village.by["house2"]
    valve = village.sales[0].cut
    url = url_of(seller)
    login(d, url, PASSWORD)
    wait(lambda: d.current_url == url + "/", "the node page after login")
    call(seller, "valve.open", name=valve)
    srv, handler = attacker
    handler.target = f"{url}/do/valve.close"
    d.get(f"http://127.0.0.1:{srv.server_address[1]}/")
    body = wait(lambda: d.find_element(By.TAG_NAME, "body").text if d.current_url.startswith(url) else "",
                "the dashboard's answer to the forged form")
    assert "refused" in body or "log in first" in body, body
    assert next(v for v in call(seller, "valve.list") if v["name"] == valve)["open"] is True
    # The session itself still works from the dashboard's own page.
    d.get(url + "/valves")
    assert d.find_element(By.CSS_SELECTOR, f'#valve-{valve} [data-k="state"]').text == "open"


def test_a_wrong_password_is_refused_and_then_rate_limited(village: Story, browser: Any,
                                                            shots: Path) -> None:
    from selenium.webdriver.common.by import By

    d, buyer = browser, village.by["house1"]
    url = url_of(buyer)
    errors = []
    for _ in range(4):
        login(d, url, "not the token")
        errors.append(d.find_element(By.ID, "error").text)
    assert errors[:3] == ["Wrong password."] * 3 and errors[3].startswith("Wrong password. Locked for"), errors
    login(d, url, token_of(buyer))  # the right one, but too soon
    assert "Too many wrong passwords" in d.find_element(By.ID, "error").text
    assert d.current_url.endswith("/login") and not d.get_cookies()
    shoot(d, shots, "login-locked")

    def logged_in() -> bool:  # the lock lasts seconds (login_lock_s after the fourth failure)
        login(d, url, token_of(buyer))
        return bool(d.current_url == url + "/")

    wait(logged_in, "the lock to end", timeout=40)
