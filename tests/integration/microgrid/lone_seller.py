"""A real seller node (flow meter and valve on mock pins) facing a buyer that is the test process
itself: the seller's files and config, and the buyer's network config."""
from __future__ import annotations

import json
from pathlib import Path

from eschaton.config import NodeConfig, parse_config
from eschaton.demo.village import House, free_port
from eschaton.net.identity import create_identity


def lone_seller(tmp_path: Path, name: str, meter: str, buyer_id: str, extra: str = "") -> House:
    """House ``name`` selling water from ``meter`` to ``buyer_id``; ``extra``: more
    ``[[microgrid.sell]]`` keys."""
    seller = House(name, "seller")
    seller.datadir = tmp_path / name
    seller.node_id = create_identity(seller.datadir).node_id.hex()
    seller.port, seller.config, seller.log = free_port(), seller.datadir / "node.toml", seller.datadir / "node.log"
    seller.flows = seller.datadir / "flows.json"
    seller.flows.write_text(json.dumps([{"name": meter, "pin": 17, "hz": 90.0, "valve": "v1"}]))
    seller.config.write_text(f'''
[node]
datadir = "{seller.datadir}"
name = "{name}"
[network]
listen = ["tcp://127.0.0.1:{seller.port}"]
[network.discovery]
enabled = false
[chain]
datadir = "{tmp_path / 'chain'}"
[hardware]
backend = "mock"
[[meter]]
name = "{meter}"
type = "pulse_flow"
pin = 17
pulses_per_litre = 450
[[valve]]
name = "v1"
type = "solenoid_nc"
pin = 23
meter = "{meter}"
[microgrid]
[[microgrid.sell]]
meter = "{meter}"
valve = "v1"
buyer = "{buyer_id}"
service = "water"
unit = "litre"
base_unit = "mL"
price_msat = 50000
credit_limit_sat = 20
{extra}''')
    return seller


def buyer_config(buyer_dir: Path, name: str, seller: House) -> NodeConfig:
    """The test process's own node: no discovery, the seller pinned."""
    return parse_config(f'''
[node]
datadir = "{buyer_dir}"
name = "{name}"
[network]
listen = ["tcp://127.0.0.1:{free_port()}"]
[network.discovery]
enabled = false
[[network.peers]]
id = "{seller.node_id}"
url = "tcp://127.0.0.1:{seller.port}"
''', "buyer.toml")
