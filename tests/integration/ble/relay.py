"""Virtual Bluetooth LE radios for tests: N bumble controllers on one simulated link (the air),
each serving HCI on a loopback TCP port, so that each node process opens
``ble://tcp-client:127.0.0.1:PORT`` exactly as a Pi opens ``ble://hci-socket:0``.

    python -m tests.integration.ble.relay PORT1 PORT2 ...

Prints ``ready`` once every port listens. Commands on stdin, one per line:
- ``drop``: every LE connection ends as a supervision timeout would (the radio link is lost):
  each controller tells its host "disconnected, reason 0x08", as a real controller does when the
  peer goes out of range.
"""
from __future__ import annotations

import asyncio
import sys

from bumble import hci, ll
from bumble.controller import Controller
from bumble.link import LocalLink
from bumble.transport import open_transport

SUPERVISION_TIMEOUT = 0x08


def drop_all(controllers: list[Controller]) -> int:
    dropped = 0
    for controller in controllers:
        for connection in list(controller.le_connections.values()):
            # Tell the peer's controller over the air, then our own host.
            connection.send_ll_control_pdu(ll.TerminateInd(SUPERVISION_TIMEOUT))
            controller.on_le_disconnected(connection, SUPERVISION_TIMEOUT)
            dropped += 1
    return dropped


async def main(ports: list[int]) -> None:
    link = LocalLink()
    controllers = []
    for i, port in enumerate(ports):
        transport = await open_transport(f"tcp-server:127.0.0.1:{port}")
        controllers.append(Controller(f"C{i}", host_source=transport.source,
                                      host_sink=transport.sink, link=link,
                                      public_address=hci.Address(f"00:BE:00:00:00:{i + 1:02X}")))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip() == "drop":
            print(f"dropped {drop_all(controllers)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main([int(p) for p in sys.argv[1:]]))
