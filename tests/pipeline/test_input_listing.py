"""Planning an input folder with hostile entries (issue 15, F1-F4): symlinks that point
out of the input root, symlink loops, a name that is not UTF-8, dangling links, FIFOs
and sockets. Planning ends, lists each real file once, never reads outside the input
root, and gives every entry that looks like input a ledger row with a reason."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import CurateConfig
from pipeline.runner import run_curate
from pipeline.shards import (
    REASON_DANGLING_SYMLINK,
    REASON_FIFO,
    REASON_NON_UTF8_NAME,
    REASON_SOCKET,
    REASON_SYMLINK_LOOP,
    REASON_SYMLINK_OUTSIDE,
    list_input,
)

TEXT = "Rivers carry water from the mountains to the sea through the green valley.\n" * 5
SECRET = "root:x:0:0:SECRET-LINE-THAT-MUST-NOT-BE-READ:/root:/bin/bash\n"


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) if planning loops forever: F3 hung > 120 s."""

    def give_up(*_):
        raise TimeoutError("planning did not finish")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _hostile_folder(tmp_path: Path) -> tuple[Path, list[socket.socket]]:
    """data/ with 4 real text files (two in a sub-folder) and every hostile entry."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    for relative in ["a.txt", "b.txt", "sub/c.txt", "sub/d.txt"]:
        (root / relative).write_text(f"{relative}: {TEXT}")
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    (root / "passwd.txt").symlink_to(secret)  # F4, a file we own
    (root / "etc-passwd.txt").symlink_to("/etc/passwd")  # F4 as reported
    (root / "outside-folder").symlink_to(secret.parent)  # a folder out of the root
    (root / "loop").symlink_to(".")  # F2 / F3: two loops back to the root
    (root / "sub" / "loop2").symlink_to("..")
    (root / "self.txt").symlink_to("self.txt")  # a link to itself
    (root / "dangling.txt").symlink_to(root / "gone.txt")
    (root / "alias.txt").symlink_to("a.txt")  # inside the root: one file, listed once
    os.mkfifo(root / "pipe.txt")
    sockets = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "sock.txt"))
    sockets.append(server)
    os.mkdir(os.fsencode(root) + b"/caf\xe9")  # Latin-1 folder name: not UTF-8
    with open(os.fsencode(root) + b"/caf\xe9/menu.txt", "w") as handle:
        handle.write(TEXT)
    with open(os.fsencode(root) + b"/na\xefve.txt", "w") as handle:
        handle.write(TEXT)
    return root, sockets


EXPECTED_PROBLEMS = {
    "d/passwd.txt": REASON_SYMLINK_OUTSIDE,
    "d/etc-passwd.txt": REASON_SYMLINK_OUTSIDE,
    "d/outside-folder": REASON_SYMLINK_OUTSIDE,
    "d/self.txt": REASON_SYMLINK_LOOP,
    "d/dangling.txt": REASON_DANGLING_SYMLINK,
    "d/pipe.txt": REASON_FIFO,
    "d/sock.txt": REASON_SOCKET,
    "d/caf\\xe9/menu.txt": REASON_NON_UTF8_NAME,
    "d/na\\xefve.txt": REASON_NON_UTF8_NAME,
}
REAL_FILES = ["d/a.txt", "d/b.txt", "d/sub/c.txt", "d/sub/d.txt"]


def test_planning_lists_each_real_file_once_and_every_hostile_entry(tmp_path, no_hang):
    root, sockets = _hostile_folder(tmp_path)
    _, files = list_input(str(root), "d")
    readable = sorted(f.source for f in files if f.problem is None)
    assert readable == REAL_FILES  # F2: once each, whatever the loops and aliases
    problems = {f.source: f.problem for f in files if f.problem is not None}
    assert problems == EXPECTED_PROBLEMS
    assert all(f.size_bytes > 0 and f.mtime_ns > 0 for f in files if f.problem is None)
    for sock in sockets:
        sock.close()


def test_planning_work_is_bounded_by_the_real_folders(tmp_path, monkeypatch, no_hang):
    """F3: each real folder is listed once, however many links lead to it."""
    root, _ = _hostile_folder(tmp_path)
    for number in range(20):  # many more loops, to any depth
        (root / "sub" / f"up{number}").symlink_to("../" * 1)
        (root / f"again{number}").symlink_to("sub")
    listed: list[bytes] = []
    real_scandir = os.scandir

    def counting_scandir(path):
        listed.append(os.path.realpath(path))
        return real_scandir(path)

    monkeypatch.setattr("pipeline.shards.os.scandir", counting_scandir)
    _, files = list_input(str(root), "d")
    assert sorted(f.source for f in files if f.problem is None) == REAL_FILES
    real_folders = {os.path.realpath(os.fsencode(p)) for p in [root, root / "sub"]}
    real_folders.add(os.path.realpath(os.fsencode(root) + b"/caf\xe9"))
    assert len(listed) == len(set(listed)) == len(real_folders)


def test_links_out_are_followed_only_when_allowed(tmp_path, no_hang):
    root, _ = _hostile_folder(tmp_path)
    _, files = list_input(str(root), "d", follow_symlinks_outside=True)
    readable = {f.source for f in files if f.problem is None}
    assert {"d/passwd.txt", "d/etc-passwd.txt", "d/outside-folder/passwd"} - readable == {
        "d/outside-folder/passwd"  # no reader for a file without a suffix
    }
    problems = {f.source: f.problem for f in files if f.problem is not None}
    assert problems["d/self.txt"] == REASON_SYMLINK_LOOP  # loops still caught


def test_a_glob_lists_problems_only_for_names_it_matches(tmp_path, no_hang):
    """A folder link out of the root is always listed: what lies behind it is unknown."""
    root, _ = _hostile_folder(tmp_path)
    _, files = list_input(str(root / "[abp]*"), "d")
    assert {f.source for f in files if f.problem is None} == {"d/a.txt", "d/b.txt"}
    problems = {f.source: f.problem for f in files if f.problem is not None}
    assert problems == {
        "d/pipe.txt": REASON_FIFO,
        "d/passwd.txt": REASON_SYMLINK_OUTSIDE,
        "d/outside-folder": REASON_SYMLINK_OUTSIDE,
    }


def test_hostile_folder_through_a_whole_run(ray_session, tmp_path, no_hang):
    """F1-F4 end to end: the run finishes, every hostile entry has a rejects row with its
    reason, the secret behind the outside link is never read, the identity holds."""
    root, _ = _hostile_folder(tmp_path)
    config = CurateConfig.model_validate(
        {
            "inputs": [{"path": str(root), "name": "d"}],
            "output_dir": str(tmp_path / "out"),
            "stages": {"extract": None, "langid": None, "heuristics": None, "domain": None},
        }
    )
    result = run_curate(config)
    ledger = result.ledger
    assert ledger["identity_holds"]
    assert ledger["totals"]["input"] == len(REAL_FILES) + len(EXPECTED_PROBLEMS)
    rejects = pq.read_table(tmp_path / "out" / "rejects").to_pylist()
    by_source = {row["source"]: row for row in rejects if row["stage"] == "read"}
    for source, reason in EXPECTED_PROBLEMS.items():
        assert by_source[source]["reason"] == reason, source
    assert ledger["stages"]["read"]["rejected"][REASON_SYMLINK_OUTSIDE] == 3
    everything = (tmp_path / "out").rglob("*")
    for path in everything:
        if path.is_file():
            assert b"SECRET-LINE" not in path.read_bytes(), path
            assert b"root:x:0:0" not in path.read_bytes(), path
    docs = pq.read_table(tmp_path / "out" / "docs", columns=["source"]).column(0).to_pylist()
    assert sorted(docs) == REAL_FILES
