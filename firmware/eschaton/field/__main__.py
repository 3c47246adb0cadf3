"""``python -m eschaton.field boot``: what ``eschaton-field.service`` runs at every boot, as root,
before the network and the node: first-boot steps, then ``eschaton.toml``. Also ``check FILE``
(check a file on a laptop before putting the card back) and ``mesh`` (``eschaton-mesh.service``:
netem and bat0's address)."""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

from eschaton.errors import LocalError


def _console(line: str) -> None:
    """The reason goes to the journal (stdout) and to the console: the kernel log, which the
    console shows even before a getty runs."""
    print(line, flush=True)
    try:
        with open("/dev/kmsg", "w") as k:
            k.write(f"<3>{line}\n" if "refused" in line else f"<5>{line}\n")
    except OSError:
        pass


def _boot_partition(root: Path) -> bool:
    """Whether the FAT partition is mounted at /boot/firmware. Its mount is ``nofail`` (a card
    whose FAT partition is damaged must still boot), so at boot it may have timed out waiting
    for the device (a slow card, a loaded machine): try once more, then report it."""
    if root != Path("/"):
        return True  # a test's directory standing for the root
    mnt = "/boot/firmware"
    if not os.path.ismount(mnt):
        res = subprocess.run(["mount", mnt], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            _console(f"eschaton-field: cannot mount {mnt}: {' '.join(res.stderr.split())}")
    return os.path.ismount(mnt)


def cmd_boot(args: argparse.Namespace) -> int:
    from eschaton.field import apply, firstboot

    root = Path(args.root)
    if not args.no_grow:
        try:
            disk, part, number = firstboot.root_device(str(root))
            if firstboot.grow_root(root, disk, part, number):
                _console(f"eschaton-field: grew {part} to the end of {disk}")
        except (OSError, ValueError, RuntimeError) as exc:
            # Not fatal: the node runs on the root it has; the next boot tries again.
            _console(f"eschaton-field: could not grow the root filesystem: {exc}")
    node_id, made = firstboot.node_key(root)
    if made:
        _console(f"eschaton-field: made the node key: node id {node_id}")
    try:
        if firstboot.ssh_host_keys(root):
            _console("eschaton-field: made this node's SSH host keys")
    except (OSError, RuntimeError) as exc:
        _console(f"eschaton-field: could not make the SSH host keys: {exc}")
    outcome = apply.apply(root, node_id, boot_mounted=_boot_partition(root))
    _console(outcome.message())
    if args.set_hostname and root == Path("/"):
        try:
            socket.sethostname(outcome.hostname)
        except OSError as exc:
            _console(f"eschaton-field: could not set the hostname: {exc.strerror}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from eschaton.field.bootconf import load_boot_config

    load_boot_config(args.file)
    print(f"{args.file}: good")
    return 0


def cmd_mesh(args: argparse.Namespace) -> int:
    from eschaton.field import mesh

    return int(mesh.main(Path(args.root)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eschaton.field")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("boot", help="first boot steps and eschaton.toml (eschaton-field.service)")
    p.add_argument("--root", default="/")
    p.add_argument("--no-grow", action="store_true", help="do not grow the root partition")
    p.add_argument("--no-hostname", dest="set_hostname", action="store_false")
    p.set_defaults(handler=cmd_boot)
    p = sub.add_parser("check", help="check an eschaton.toml")
    p.add_argument("file")
    p.set_defaults(handler=cmd_check)
    p = sub.add_parser("mesh", help="netem and bat0's address (eschaton-mesh.service)")
    p.add_argument("--root", default="/")
    p.set_defaults(handler=cmd_mesh)
    args = ap.parse_args(argv)
    try:
        return int(args.handler(args))
    except LocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
