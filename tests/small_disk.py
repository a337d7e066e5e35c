"""A real small filesystem for disk-full tests: a tmpfs of a few MiB, mounted in a private mount namespace.

The namespace is held by a sleeping process (``unshare --mount``; as a user without root, ``unshare --user
--map-root-user --mount``, which needs unprivileged user namespaces). Commands run inside it through ``nsenter``,
and this process reads and writes the tmpfs through ``/proc/<holder>/root``. Nobody else on the machine sees the
mount, and it disappears when the holder dies (with this process at the latest: ``PR_SET_PDEATHSIG``), so a
killed test leaves no mount behind.

Where neither is allowed (a container without ``CAP_SYS_ADMIN`` and without user namespaces), :func:`small_disk`
yields ``None`` with the reason, and the tests fall back to ``RLIMIT_FSIZE`` (a real write refused by the kernel,
but ``EFBIG`` rather than ``ENOSPC``, and no free-space figure).
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Set to 1 to exercise the RLIMIT_FSIZE fallback on a machine that can mount.
FORCE_FALLBACK = "CDCO_TEST_NO_MOUNT"


@dataclass
class SmallDisk:
    """A mounted tmpfs. ``mountpoint``: its path for commands started with :meth:`run`; ``view``: its path for
    this process (the same files)."""

    mountpoint: Path
    view: Path
    enter: list[str]
    holder: subprocess.Popen

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """``argv`` inside the namespace (it sees the tmpfs at :attr:`mountpoint`); text output captured."""
        return subprocess.run([*self.enter, *argv], capture_output=True, text=True, **kwargs)

    def free(self) -> int:
        return shutil.disk_usage(self.view).free

    def fill(self, leave: int = 0) -> Path:
        """Write ``filler`` until at most ``leave`` bytes are free (0: until the kernel says ENOSPC)."""
        filler = self.view / "filler"
        with open(filler, "ab") as f:
            while (room := self.free() - leave) > 0:
                try:
                    f.write(b"\0" * min(room, 1 << 20))
                    f.flush()
                except OSError:  # ENOSPC: full
                    break
        return filler


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when this test process exits (survives exec; unshare does not fork)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


@contextmanager
def small_disk(mountpoint: Path, size: int) -> Iterator[SmallDisk | str]:
    """A tmpfs of ``size`` bytes at ``mountpoint`` (an empty folder), or the reason it cannot be mounted here."""
    if os.environ.get(FORCE_FALLBACK) == "1":
        yield f"{FORCE_FALLBACK}=1"
        return
    missing = [tool for tool in ("unshare", "nsenter") if shutil.which(tool) is None]
    if missing:
        yield f"{' and '.join(missing)} not installed"
        return
    mountpoint.mkdir(parents=True, exist_ok=True)
    userns = os.geteuid() != 0
    script = 'mount -t tmpfs -o size="$1",mode=0700 cdco-test-disk "$2" && echo mounted && exec sleep 3600'
    holder = subprocess.Popen(
        ["unshare", *(["--user", "--map-root-user"] if userns else []), "--mount", "--propagation", "private",
         "--", "sh", "-c", script, "sh", str(size), str(mountpoint)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent)
    try:
        first = holder.stdout.readline() if holder.stdout else ""
        if first.strip() != "mounted":
            holder.wait(timeout=30)
            yield f"cannot mount a tmpfs here: {(first + (holder.stdout.read() if holder.stdout else '')).strip()}"
            return
        enter = ["nsenter", f"--target={holder.pid}", "--mount",
                 *(["--user", "--preserve-credentials"] if userns else [])]
        yield SmallDisk(mountpoint, Path(f"/proc/{holder.pid}/root") / mountpoint.relative_to("/"), enter, holder)
    finally:
        holder.kill()  # the namespace, and with it the mount, goes with its last process
        holder.wait(timeout=30)
        if holder.stdout:
            holder.stdout.close()


def limit_file_size(nbytes: int):
    """A ``preexec_fn``: no file of the child may grow past ``nbytes`` (writes past it fail with EFBIG)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the child instead of failing the write
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply
