"""The image, built once per session and shared by the image tests (the build is ~9 minutes).

``built`` is the builder's output (in CI, built from scratch); ``bootable`` is the same file with
the test-only autologin added. Guests never write to it: each boots a qcow2 overlay
(``qemu.overlay``), so every guest starts from the image as built (first boot, no node key).
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, need_file, need_root, need_tool
from tests.integration.image.qemu import BUILD_TOOLS, SUFFIXES, VIRTIO_NET_ROM, add_autologin, build


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image, built from scratch by the real builder (debootstrap, apt, wheels, mkfs)."""
    need_root()
    for tool in BUILD_TOOLS:
        need_tool(tool)
    # Checked before the ~10-minute build, not when the mesh test's guests power on.
    need_file(VIRTIO_NET_ROM)
    out = tmp_path_factory.mktemp("image") / "eschaton-arm64.img"
    prebuilt = os.environ.get("ESCHATON_TEST_IMAGE")
    if prebuilt and not IN_CI:
        # Developer iterations on the boot half: a sparse copy of an image built earlier
        # (with its .vmlinuz and .initrd.img). CI always builds from scratch.
        for suffix in SUFFIXES:
            subprocess.run(["cp", "--sparse=always", str(Path(prebuilt).with_suffix(suffix)),
                            str(out.with_suffix(suffix))], check=True)
    else:
        build(out)
    try:
        yield out
    finally:
        # Nearly 1 GB written: do not leave it in pytest's kept temporary directories.
        for suffix in SUFFIXES:
            out.with_suffix(suffix).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def bootable(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' copy with a root autologin on the serial console; a read-only base of the
    guests' overlays."""
    add_autologin(built, tmp_path_factory.mktemp("autologin"))
    return built
