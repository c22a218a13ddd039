"""The check that the suite leaves the checkout unchanged (run by ``conftest.pytest_sessionfinish``) sees
what a test could leave behind: a new file, an edited tracked file, a new folder."""

import shutil
import subprocess

import pytest
from conftest import checkout_changes, git_state


@pytest.fixture
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "tracked.txt").write_text("one\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "tracked.txt"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
                   check=True)
    return tmp_path


def test_an_unchanged_checkout_reports_nothing(repo):
    assert checkout_changes(git_state(repo), git_state(repo)) == []


def test_new_files_folders_and_edits_are_reported(repo):
    before = git_state(repo)
    (repo / "stray.csv").write_text("x\n")
    (repo / "venv" / "lib").mkdir(parents=True)
    (repo / "venv" / "lib" / "big.py").write_text("pass\n")
    (repo / "tracked.txt").write_text("two\n")
    changed = checkout_changes(before, git_state(repo))
    assert changed == [" M tracked.txt", "?? stray.csv", "?? venv/"]


def test_a_second_edit_of_an_already_modified_file_is_reported(repo):
    (repo / "tracked.txt").write_text("two\n")
    before = git_state(repo)
    (repo / "tracked.txt").write_text("three\n")
    assert checkout_changes(before, git_state(repo)) == [" M tracked.txt"]


def test_outside_a_checkout_there_is_nothing_to_compare(tmp_path):
    assert git_state(tmp_path) is None
    assert checkout_changes(None, {}) is None
