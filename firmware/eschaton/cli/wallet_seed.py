"""``eschaton wallet restore|show-mnemonic|descriptors``: the seed in and out of the node.

Rules:
- A secret never travels in argv (other users see it in ``ps``; shells keep it in history):
  ``restore`` reads the mnemonic from stdin (without echo on a terminal) or from ``--file``, and
  refuses words given on the command line without repeating them.
- Errors say what is wrong (word count, word position, checksum) and never quote the input.
- Secrets go to stdout only, and only after a confirmation: ``yes`` typed on a terminal, or
  ``--yes`` for scripts. Reading the 0600 seed file makes these commands owner-only.
- ``restore`` refuses while a node runs on the datadir (it holds the old seed in memory), and
  replaces a different seed only with ``--force``, keeping the old one (``wallet.seed.restore``).
  Then it rescans: the balance it prints comes from the gap scan of the restored keys.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from eschaton.cli.node_api import add_node_common as add_common
from eschaton.errors import LocalError

MAX_INPUT = 64 * 1024  # a mnemonic and passphrase are far shorter; bounds a mistaken pipe


def register(sub: Any) -> None:
    p = sub.add_parser("restore", help="restore the wallet from a BIP39 mnemonic read from stdin or --file")
    p.add_argument("--file", metavar="PATH", help="read the mnemonic from PATH instead of stdin")
    p.add_argument("--passphrase", action="store_true",
                   help="the wallet also has a BIP39 passphrase: the input's last line (asked "
                        "separately on a terminal)")
    p.add_argument("--force", action="store_true",
                   help="replace a different existing seed (it is kept as seed.replaced-<time>)")
    p.add_argument("words", nargs="*", help=argparse.SUPPRESS)  # caught to refuse, see _refuse_argv
    add_common(p)
    p.set_defaults(handler=cmd_restore)

    p = sub.add_parser("show-mnemonic", help="print the wallet's mnemonic, after a confirmation")
    p.add_argument("--yes", action="store_true", help="confirm without a prompt (for scripts)")
    p.add_argument("--with-passphrase", action="store_true",
                   help="also print the BIP39 passphrase, if one is set, as a second line")
    add_common(p)
    p.set_defaults(handler=cmd_show_mnemonic)

    p = sub.add_parser("descriptors", help="the wallet's receive and change output descriptors (BIP380)")
    p.add_argument("--private", action="store_true",
                   help="with the account's private key (asks for a confirmation)")
    p.add_argument("--yes", action="store_true", help="confirm --private without a prompt")
    add_common(p)
    p.set_defaults(handler=cmd_descriptors)


# --- where the wallet is ----------------------------------------------------------------------

def wallet_place(args: argparse.Namespace) -> tuple[Path, str]:
    """(the node's datadir, embit network name) from --config, else --datadir on regtest."""
    from eschaton.store.datadir import resolve_datadir

    if getattr(args, "config", None):
        from eschaton.config import load_config

        cfg = load_config(args.config)
        return Path(cfg.node.datadir), network_name(cfg.chain.network)
    return Path(resolve_datadir(args.datadir)), "regtest"


def network_name(network: str) -> str:
    """The config's network name as embit names it."""
    return {"mainnet": "main", "testnet": "test"}.get(network, network)


def _node_running(args: argparse.Namespace) -> bool:
    """Whether a node answers on this datadir's API (wherever ``[api]`` puts it). Only "nobody
    answers" counts as stopped: a node too busy to answer in time still holds the seed."""
    from eschaton.api.client import CommandFailed, NodeNotRunning
    from eschaton.cli.node_api import call
    from eschaton.errors import TransientError

    try:
        call(args, "node.status")
    except NodeNotRunning:
        return False
    except (CommandFailed, TransientError):
        return True
    return True


# --- reading secrets --------------------------------------------------------------------------

def _refuse_argv(args: argparse.Namespace) -> None:
    if args.words:
        raise LocalError("the mnemonic is read from stdin or --file, never from the command line "
                         "(other users can see arguments); nothing was restored")


def _read_text(path: str | None) -> str:
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_INPUT + 1)
        except FileNotFoundError:
            raise LocalError(f"--file {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise LocalError(f"--file {path}: cannot read it: {getattr(e, 'strerror', None) or 'not UTF-8 text'}") from None
    else:
        try:
            text = sys.stdin.read(MAX_INPUT + 1)
        except UnicodeDecodeError:
            raise LocalError("stdin is not UTF-8 text") from None
    if len(text) > MAX_INPUT:
        raise LocalError(f"the input is longer than {MAX_INPUT} bytes; a mnemonic is a few hundred")
    return text


def read_mnemonic(args: argparse.Namespace) -> tuple[str, str]:
    """(mnemonic, passphrase) from --file, a terminal (no echo) or piped stdin.

    Without --passphrase the whole input is the mnemonic (one word a line is fine); with it,
    the last line is the passphrase and the lines before it are the mnemonic."""
    if args.file is None and sys.stdin.isatty():
        import getpass

        words = getpass.getpass("Mnemonic (not echoed): ", stream=sys.stderr)
        phrase = ""
        if args.passphrase:
            phrase = getpass.getpass("Passphrase (not echoed): ", stream=sys.stderr)
            if getpass.getpass("Passphrase again: ", stream=sys.stderr) != phrase:
                raise LocalError("the two passphrases differ; nothing was restored")
        return words, phrase
    text = _read_text(args.file)
    if text.endswith("\n"):
        text = text[:-1]
    text = text.replace("\r\n", "\n")
    if not args.passphrase:
        return text, ""
    if "\n" not in text:
        raise LocalError("--passphrase: the input needs the passphrase on a line after the mnemonic")
    words, phrase = text.rsplit("\n", 1)
    return words, phrase


def confirm(args: argparse.Namespace, what: str) -> None:
    """Go on only if the user typed ``yes`` on a terminal, or gave ``--yes``."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise LocalError(f"{what} shows a secret: give --yes, or run it on a terminal to confirm")
    sys.stderr.write(f"{what} prints a secret: whoever sees it can spend the wallet's coins.\n"
                     "Type yes to go on: ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() != "yes":
        raise LocalError("not confirmed; nothing was shown")


# --- commands ---------------------------------------------------------------------------------

def cmd_restore(args: argparse.Namespace) -> Any:
    from eschaton.wallet.seed import restore

    _refuse_argv(args)
    base, network = wallet_place(args)
    if _node_running(args):
        raise LocalError(f"a node is running on {base}: stop it first (it holds the current seed)")
    words, phrase = read_mnemonic(args)
    done = restore(base / "wallet", words, phrase, force=args.force, network=network)

    async def rescan(w: Any) -> Any:
        b = await w.balance()
        return {"confirmed": b.confirmed, "unconfirmed": b.unconfirmed, "immature": b.immature}

    from eschaton.cli.wallet import with_wallet

    balance = with_wallet(args, rescan)
    out: dict[str, Any] = {"fingerprint": done.seed.fingerprint().hex(),
                           "restored": not done.unchanged, **balance}
    if done.backup is not None:
        out["old_seed_kept_in"] = str(done.backup)
    return out


def cmd_show_mnemonic(args: argparse.Namespace) -> Any:
    from eschaton.wallet.seed import read_seed

    base, network = wallet_place(args)
    seed = read_seed(base / "wallet", network)  # owner-only: refuses before any prompt
    confirm(args, "show-mnemonic")
    if args.json:
        out = {"mnemonic": seed.mnemonic}
        if args.with_passphrase:
            out["passphrase"] = seed.passphrase
        return out
    if seed.passphrase and not args.with_passphrase:
        sys.stderr.write("note: this wallet also has a BIP39 passphrase (--with-passphrase shows it); "
                         "restoring needs both\n")
    lines = [seed.mnemonic]
    if args.with_passphrase and seed.passphrase:
        lines.append(seed.passphrase)
    return "\n".join(lines)


def cmd_descriptors(args: argparse.Namespace) -> Any:
    from eschaton.wallet.descriptors import descriptors
    from eschaton.wallet.seed import read_seed

    base, network = wallet_place(args)
    seed = read_seed(base / "wallet", network)
    if args.private:
        confirm(args, "descriptors --private")
    d = descriptors(seed, private=args.private)
    return {"receive": d.receive, "change": d.change}
