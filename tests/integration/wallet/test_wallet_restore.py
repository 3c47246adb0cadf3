"""``eschaton wallet restore|show-mnemonic|descriptors`` end to end through the console script,
on the embedded chain: restore rescans, backups, passphrases, one-line errors, ttys, and no
secret anywhere it should not be."""
from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
from pathlib import Path

VECTOR = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
COIN = 50 * 10**8


def esc(*args: str, datadir: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eschaton", *args, "--datadir", str(datadir)],
                          input=stdin if stdin is not None else "", capture_output=True, text=True,
                          timeout=120)


def ok(r: subprocess.CompletedProcess[str]) -> dict:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def one_line_error(r: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert text in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def files_holding(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink() and needle in p.read_bytes())


def test_restore_rescans_keeps_the_old_seed_and_leaks_nowhere(tmp_path: Path) -> None:
    d = tmp_path / "node"
    addrs = [ok(esc("wallet", "address", "--json", datadir=d))["address"] for _ in range(5)]
    # Coins on the fifth address (index 4): the restored wallet must find them by its gap scan.
    assert esc("chain", "mine", "1", "--to", addrs[4], datadir=d).returncode == 0
    assert esc("chain", "mine", "100", datadir=d).returncode == 0
    fingerprint = ok(esc("wallet", "descriptors", "--json", datadir=d))["receive"][6:14]
    mnemonic = ok(esc("wallet", "show-mnemonic", "--yes", "--json", datadir=d))["mnemonic"]
    assert len(mnemonic.split()) == 24

    # The device's wallet is lost; the chain is not. Restore from the words on stdin.
    (d / "wallet").rename(tmp_path / "lost-wallet")
    out = ok(esc("wallet", "restore", "--json", datadir=d, stdin=mnemonic + "\n"))
    assert out["restored"] is True and out["fingerprint"] == fingerprint
    assert out["confirmed"] == COIN and "old_seed_kept_in" not in out
    # Indices moved past the used key: the next address is index 5, never a reused one.
    assert ok(esc("wallet", "address", "--json", datadir=d))["address"] not in addrs
    seed = d / "wallet" / "seed"
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "wallet").stat().st_mode) == 0o700

    # The same words again: nothing to do, no --force needed (a retried restore is harmless).
    assert ok(esc("wallet", "restore", "--json", datadir=d, stdin=mnemonic))["restored"] is False

    # Different words: refused without --force, and the seed is untouched.
    r = esc("wallet", "restore", datadir=d, stdin=VECTOR)
    one_line_error(r, 1, "--force replaces it")
    assert seed.read_text().split("\n")[0] == mnemonic
    out = ok(esc("wallet", "restore", "--force", "--json", datadir=d, stdin=VECTOR))
    assert out["fingerprint"] == "73c5da0a" and out["confirmed"] == 0
    backup = Path(out["old_seed_kept_in"])
    assert backup.parent == d / "wallet" and backup.name.startswith("seed.replaced-")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert backup.read_text() == mnemonic + "\n"

    # The backup is itself a restore input: put the old wallet back, coins and all.
    out = ok(esc("wallet", "restore", "--force", "--file", str(backup), "--json", datadir=d))
    assert out["fingerprint"] == fingerprint and out["confirmed"] == COIN

    # The words are in the seed files and nowhere else: not in the chain, state, or any log.
    (tmp_path / "lost-wallet" / "seed").unlink()
    holders = files_holding(tmp_path, mnemonic)
    assert holders and all(Path(h).name == "seed" or Path(h).name.startswith("seed.replaced-")
                           for h in holders), holders


def test_passphrase_restore_show_and_descriptors(tmp_path: Path) -> None:
    words_file = tmp_path / "words.txt"
    words_file.write_text(VECTOR.replace(" ", "\n") + "\ncorrect horse battery staple\n")
    a, b = tmp_path / "a", tmp_path / "b"
    with_phrase = ok(esc("wallet", "restore", "--passphrase", "--file", str(words_file), "--json", datadir=a))
    plain = ok(esc("wallet", "restore", "--json", datadir=b, stdin=VECTOR))
    assert plain["fingerprint"] == "73c5da0a" and with_phrase["fingerprint"] != plain["fingerprint"]

    r = esc("wallet", "show-mnemonic", "--yes", datadir=a)
    assert r.returncode == 0 and r.stdout == VECTOR + "\n"
    assert "passphrase" in r.stderr and "correct horse" not in r.stderr
    r = esc("wallet", "show-mnemonic", "--yes", "--with-passphrase", datadir=a)
    assert r.stdout == VECTOR + "\ncorrect horse battery staple\n"
    # What show-mnemonic prints is what restore reads.
    again = ok(esc("wallet", "restore", "--passphrase", "--json", datadir=tmp_path / "c", stdin=r.stdout))
    assert again["fingerprint"] == with_phrase["fingerprint"]

    pub = ok(esc("wallet", "descriptors", "--json", datadir=a))
    assert pub["receive"].startswith(f"wpkh([{with_phrase['fingerprint']}/84h/1h/0h]tpub")
    priv = ok(esc("wallet", "descriptors", "--private", "--yes", "--json", datadir=a))
    assert "tprv" in priv["receive"] and "tprv" in priv["change"]


def test_bad_input_is_one_line_and_never_echoed(tmp_path: Path) -> None:
    d = tmp_path / "n"
    no_wallet = tmp_path / "empty"
    words_file = tmp_path / "one-line.txt"
    words_file.write_text(VECTOR + "\n")
    bad = [
        (("wallet", "restore"), "abandon " * 11, "this one has 11"),
        (("wallet", "restore"), VECTOR.replace("about", "aboutt"), "word 12 of the mnemonic is not in"),
        (("wallet", "restore"), VECTOR.replace("about", "zoo"), "checksum does not match"),
        (("wallet", "restore"), "", "no mnemonic given"),
        (("wallet", "restore", *VECTOR.split()), "", "never from the command line"),
        (("wallet", "restore", "--file", str(tmp_path / "missing")), "", "no such file"),
        (("wallet", "restore", "--passphrase", "--file", str(words_file)), "", "needs the passphrase"),
        (("wallet", "restore"), "x" * 70_000, "longer than"),
        (("wallet", "show-mnemonic"), "", "no wallet in"),
        (("wallet", "descriptors"), "", "no wallet in"),
    ]
    for args, stdin, text in bad:
        r = esc(*args, datadir=no_wallet if args[1] != "restore" else d, stdin=stdin)
        one_line_error(r, 1, text)
        for word in ("abandon", "about", "aboutt", "zoo"):
            assert word not in r.stderr and word not in r.stdout, (args, r.stderr)
    assert not (d / "wallet" / "seed").exists()  # nothing was restored by any of them

    ok(esc("wallet", "restore", "--json", datadir=d, stdin=VECTOR))
    for args in (("wallet", "show-mnemonic"), ("wallet", "descriptors", "--private")):
        r = esc(*args, datadir=d)  # stdin is a pipe, not a terminal: a prompt cannot be answered
        one_line_error(r, 1, "give --yes")
        assert "abandon" not in r.stdout and "prv" not in r.stdout
    os.chmod(d / "wallet" / "seed", 0o644)
    one_line_error(esc("wallet", "show-mnemonic", "--yes", datadir=d), 1, "readable by others")


def run_on_tty(args: list[str], answers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Run the CLI with a pty as its controlling terminal; on each prompt, type its answer.
    Returns (exit code, everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the pty
        os.execv(sys.executable, [sys.executable, "-m", "eschaton", *args])
    seen = b""
    pending = list(answers)
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 120)
            assert ready, f"no output from the CLI; so far: {seen!r}"
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if pending and pending[0][0] in seen:
                os.write(fd, pending.pop(0)[1])
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen


def test_terminal_prompts_do_not_echo_and_need_yes(tmp_path: Path) -> None:
    d = str(tmp_path / "n")
    code, shown = run_on_tty(["wallet", "restore", "--passphrase", "--datadir", d],
                             [(b"Mnemonic", VECTOR.encode() + b"\n"),
                              (b"Passphrase (", b"tty secret\n"), (b"again", b"tty secret\n")])
    assert code == 0, shown
    assert b"fingerprint" in shown
    assert b"abandon" not in shown and b"tty secret" not in shown  # typed without echo

    code, shown = run_on_tty(["wallet", "show-mnemonic", "--datadir", d], [(b"Type yes", b"no\n")])
    assert code == 1 and b"not confirmed" in shown and b"abandon" not in shown
    code, shown = run_on_tty(["wallet", "show-mnemonic", "--datadir", d], [(b"Type yes", b"yes\n")])
    assert code == 0 and VECTOR.encode() in shown

    code, shown = run_on_tty(["wallet", "restore", "--passphrase", "--datadir", str(tmp_path / "m")],
                             [(b"Mnemonic", VECTOR.encode() + b"\n"),
                              (b"Passphrase (", b"one\n"), (b"again", b"two\n")])
    assert code == 1 and b"passphrases differ" in shown and not (tmp_path / "m" / "wallet" / "seed").exists()
