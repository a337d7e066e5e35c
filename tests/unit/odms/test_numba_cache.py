"""Numba's cache (whose index files numba unpickles) lives in a private per-user folder outside CDCO_HOME, and a
folder someone else can write is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdco_core.errors import InputError
from cdco_core.odms.manifold import use_numba_cache


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)  # restored after the test
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def test_cache_is_per_user_outside_the_data_home(xdg, cdco_home):
    path = use_numba_cache()
    assert path == xdg / "cdco" / "numba"
    assert not path.is_relative_to(cdco_home)
    assert os.environ["NUMBA_CACHE_DIR"] == str(path)
    assert path.stat().st_mode & 0o777 == 0o700


def test_cache_under_home_when_xdg_unset(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert use_numba_cache() == tmp_path / "user" / ".cache" / "cdco" / "numba"


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_group_or_world_writable_cache_is_refused(xdg, mode):
    path = xdg / "cdco" / "numba"
    path.mkdir(parents=True)
    path.chmod(mode)
    with pytest.raises(InputError, match=r"numba cache folder .*numba .* can be written by another user"):
        use_numba_cache()


def test_writable_cdco_folder_above_it_is_refused(xdg):
    (xdg / "cdco" / "numba").mkdir(parents=True, mode=0o700)
    (xdg / "cdco").chmod(0o777)
    with pytest.raises(InputError, match=r"numba cache folder .*/cdco \("):
        use_numba_cache()


def test_cache_owned_by_another_user_is_refused(monkeypatch, tmp_path):
    if os.geteuid() == 0:  # root can hand a folder to another user
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        os.chown(other, 65534, 65534)
    else:  # a folder root owns and we do not
        other = Path("/")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(other))
    with pytest.raises(InputError, match="owner uid"):
        use_numba_cache()
