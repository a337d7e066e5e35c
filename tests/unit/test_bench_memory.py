"""`cdco bench pipeline`'s memory probe: the peak RSS of a command and of its whole process tree."""

from __future__ import annotations

import os
import sys

from bench.pipeline import run_sampled

# The parent holds little; a child it starts holds 300 MiB of touched pages for a second, then both exit.
CHILD = "b = bytearray(300 * 2**20); import time; time.sleep(1.5); print(len(b))"
PARENT = f"import subprocess, sys; print(subprocess.run([sys.executable, '-c', {CHILD!r}], check=True) and 'ok')"


def test_the_tree_peak_counts_a_childs_memory_and_the_own_peak_does_not():
    done, peak = run_sampled([sys.executable, "-c", PARENT], dict(os.environ), every=0.05)
    assert done.returncode == 0 and done.stdout.split() == [str(300 * 2**20), "ok"], done.stderr
    assert peak["peak_tree_rss_mib"] >= 300  # the child's 300 MiB, seen in the tree
    assert peak["peak_rss_mib"] < 200  # a bare interpreter: the child's pages are not the parent's
    assert peak["peak_tree_rss_mib"] > peak["peak_rss_mib"] + 250


def test_a_failing_command_is_returned_not_raised():
    done, peak = run_sampled([sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ))
    assert done.returncode == 3
    assert set(peak) == {"peak_rss_mib", "peak_tree_rss_mib"}
