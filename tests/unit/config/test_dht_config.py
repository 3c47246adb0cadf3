"""``[dht]`` through the one config reader: defaults, values, and errors that name the file,
the key and its line."""
from __future__ import annotations

from pathlib import Path

import pytest

from eschaton.config import ConfigError, parse_config
from eschaton.config.dht import DhtConfig

HEAD = '[node]\ndatadir = "/tmp/x"\n'


def test_defaults_and_values() -> None:
    assert parse_config(HEAD, "node.toml").dht == DhtConfig()
    cfg = parse_config(HEAD + "[dht]\nk = 8\nalpha = 2\nprice_base_sat = 5\nforward = false\n"
                       "max_price_sat = 50\ntotal_kib = 1024\n", "node.toml").dht
    assert (cfg.k, cfg.alpha, cfg.price_base_sat, cfg.forward, cfg.max_price_sat, cfg.total_kib) == \
        (8, 2, 5, False, 50, 1024)


@pytest.mark.parametrize(("body", "key", "line", "what"), [
    ("[dht]\nk = 0\n", "dht.k", 4, "integer in 1..64"),
    ("[dht]\nk = 4\nalpha = 5\n", "dht.alpha", 5, "must not exceed k"),
    ("[dht]\nprice_base_sat = -1\n", "dht.price_base_sat", 4, "integer"),
    ("[dht]\nforward = 1\n", "dht.forward", 4, "true or false"),
    ("[dht]\nper_publisher_kib = 512\ntotal_kib = 256\n", "dht.total_kib", 5, "at least"),
    ("[dht]\nprices = 3\n", "dht.prices", 4, "unknown key"),
])
def test_errors_name_file_key_and_line(body: str, key: str, line: int, what: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(HEAD + body, "node.toml")
    msg = str(e.value)
    assert msg.startswith(f"node.toml:{line}") and key in msg and what in msg, msg


def test_disabled_runs_no_dht_service(tmp_path: Path) -> None:
    from eschaton.daemon.node import Node

    def names(extra: str) -> set[str]:
        cfg = parse_config(f'[node]\ndatadir = "{tmp_path}"\n{extra}', "node.toml")
        return {s.name for s in Node(cfg).services.order}

    on, off = names(""), names("[dht]\nenabled = false\n")
    assert "dht" in on and on - off == {"dht"}
