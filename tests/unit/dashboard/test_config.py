"""``[dashboard]``: off by default, loopback by default, an address only when configured, and
one-line errors naming the key and line."""
from __future__ import annotations

import pytest

from eschaton.config import ConfigError, parse_config

HEAD = '[node]\ndatadir = "/tmp/x"\n'


def test_absent_or_disabled_means_no_dashboard_and_enabled_listens_on_loopback() -> None:
    assert parse_config(HEAD).dashboard is None
    assert parse_config(HEAD + "[dashboard]\nenabled = false\n").dashboard is None
    d = parse_config(HEAD + "[dashboard]\nenabled = true\n").dashboard
    assert d is not None and d.host == "127.0.0.1" and d.port == 8480 and d.loopback
    assert str(d.password_file) == "/tmp/x/dashboard.passwd"
    lan = parse_config(HEAD + '[dashboard]\nenabled = true\nlisten = "10.1.2.3:8080"\n').dashboard
    assert lan is not None and (lan.host, lan.port, lan.loopback) == ("10.1.2.3", 8080, False)
    v6 = parse_config(HEAD + '[dashboard]\nenabled = true\nlisten = "[fd00::1]:80"\n').dashboard
    assert v6 is not None and v6.host == "fd00::1"
    assert d.login_lock_s == 2.0
    slow = parse_config(HEAD + "[dashboard]\nenabled = true\nlogin_lock_s = 10\n").dashboard
    assert slow is not None and slow.login_lock_s == 10.0


@pytest.mark.parametrize(("line", "key", "why"), [
    ('listen = "0.0.0.0:8480"', "dashboard.listen", "every interface"),
    ('listen = "[::]:8480"', "dashboard.listen", "every interface"),
    ('listen = "pi.local:8480"', "dashboard.listen", "is not an IP address"),
    ('listen = "127.0.0.1"', "dashboard.listen", "HOST:PORT"),
    ('listen = "127.0.0.1:70000"', "dashboard.listen", "out of range"),
    ("enabled = 1", "dashboard.enabled", "true or false"),
    ("enable = true", "dashboard.enable", "unknown key"),
    ("login_lock_s = 0.1", "dashboard.login_lock_s", "0.5"),
])
def test_mistakes_are_one_line_errors_naming_key_and_line(line: str, key: str, why: str) -> None:
    text = HEAD + "[dashboard]\n" + line + "\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text, "node.toml")
    msg = str(e.value)
    assert e.value.key == key and why in msg and "\n" not in msg, msg
    assert e.value.line == 4, msg
