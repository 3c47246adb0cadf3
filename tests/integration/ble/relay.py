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


class SpecController(Controller):
    """bumble's virtual controller, with LE Create Connection Cancel as the Core spec has it
    (Vol 4 Part E 7.8.13): the pending connection ends with an LE Connection Complete event of
    status Unknown Connection Identifier. bumble 0.0.236 only answers the command, so after one
    dial timeout every later dial was refused as "command disallowed" (a real controller, the
    Pi's included, follows the spec)."""

    def on_hci_le_create_connection_cancel_command(self, command):  # type: ignore[no-untyped-def]
        pending = self.pending_le_connection
        status = super().on_hci_le_create_connection_cancel_command(command)
        if pending is not None:
            self.pending_le_connection = None
            asyncio.get_running_loop().call_soon(self.send_hci_packet, hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR, connection_handle=0,
                role=hci.Role.CENTRAL, peer_address_type=pending.peer_address.address_type,
                peer_address=pending.peer_address, connection_interval=0, peripheral_latency=0,
                supervision_timeout=0, central_clock_accuracy=0))
        return status


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
        controllers.append(SpecController(f"C{i}", host_source=transport.source,
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
