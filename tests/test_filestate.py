"""The racy-clean rule every memoised file digest follows (image and model files)."""

import hashlib
import os
import time

import pytest

from skvlm import _filestate
from skvlm._filestate import FileChangingError, FileDigests, is_settled, stat_state
from skvlm._inputs import image_key
from skvlm.models import directory_digest


class CountingDigests(FileDigests):
    """FileDigests that count the files they read (to see the memo work)."""

    def __init__(self):
        self.reads = 0

        def new():
            self.reads += 1
            return hashlib.sha256()

        super().__init__(new)


@pytest.fixture
def later(monkeypatch):
    """As if 10 s had passed: every file written so far counts as settled."""
    monkeypatch.setattr(_filestate, "RACY_NS", -10 * 10**9)


@pytest.fixture
def fine_ctime(tmp_path):
    """Skip where the file system keeps whole-second ctimes (two writes 50 ms apart
    would then share one)."""
    probe = tmp_path / "tick"
    ticks = set()
    for _ in range(3):
        probe.write_bytes(b"x")
        ticks.add(os.stat(probe).st_ctime_ns % 10**9)
    if ticks == {0}:
        pytest.skip("this file system keeps whole-second ctimes")


def _rewrite_keeping_times(path, data):
    before = os.stat(path)
    with open(path, "r+b") as file:
        file.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert stat_state(after)[:2] == stat_state(before)[:2]  # size and mtime
    assert after.st_ino == before.st_ino


def test_a_settled_file_is_read_once(tmp_path, later):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    digests = CountingDigests()
    assert digests(path) == digests(path) == hashlib.sha256(b"abc").hexdigest()
    assert digests.reads == 1


def test_a_file_changed_moments_ago_is_not_remembered(tmp_path):
    # Within the racy window a rewrite in the same clock tick keeps every time
    # stat reports, so the digest must not be trusted on a later call.
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert not is_settled(os.stat(path))
    digests = CountingDigests()
    digests(path)
    digests(path)
    assert digests.reads == 2


def test_a_rewrite_with_the_times_restored_changes_the_digest(
    tmp_path, monkeypatch, fine_ctime
):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    time.sleep(0.05)  # the rewrite lands on a later clock tick than the write
    monkeypatch.setattr(_filestate, "RACY_NS", 0)  # remember at once
    digests = CountingDigests()
    assert digests(path) == hashlib.sha256(b"abc").hexdigest()
    _rewrite_keeping_times(path, b"xyz")
    assert digests(path) == hashlib.sha256(b"xyz").hexdigest()
    assert digests.reads == 2


def _model_key(path):
    return directory_digest(path.parent)  # a model directory of one file


@pytest.mark.parametrize("key", [image_key, _model_key], ids=["image", "model"])
def test_images_and_model_files_follow_the_same_rule(
    tmp_path, monkeypatch, fine_ctime, key
):
    path = tmp_path / "f"
    path.write_bytes(b"first")
    time.sleep(0.05)
    monkeypatch.setattr(_filestate, "RACY_NS", 0)
    monkeypatch.setenv("SKVLM_CACHE_DIR", "")  # no on-disk memo of model digests
    before = key(path)
    _rewrite_keeping_times(path, b"other")
    assert key(path) != before
    _rewrite_keeping_times(path, b"first")
    assert key(path) == before


def test_a_file_that_never_holds_still_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    states = iter(range(100))
    real = _filestate.stat_state
    monkeypatch.setattr(_filestate, "stat_state", lambda st: (*real(st), next(states)))
    with pytest.raises(FileChangingError, match="kept changing"):
        FileDigests(hashlib.sha256)(path)
