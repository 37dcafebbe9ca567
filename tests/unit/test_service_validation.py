"""``server.service.validate_repo_path`` and ``parse_job_id``: what callers may ask for."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from server.errors import CallerError, ValidationError
from server.service import parse_job_id, validate_repo_path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "allowed" / "repo" / "sub").mkdir(parents=True)
    (tmp_path / "allowed-evil" / "repo").mkdir(parents=True)
    (tmp_path / "outside" / "repo").mkdir(parents=True)
    (tmp_path / "allowed" / "file.txt").write_text("x", encoding="utf-8")
    return tmp_path.resolve()


def _error(repo_path: str, allowed: list[Path] | None = None) -> str:
    with pytest.raises(ValidationError) as raised:
        validate_repo_path(repo_path, allowed or [])
    assert isinstance(raised.value, CallerError)
    return str(raised.value)


def test_existing_directory_is_returned_resolved(tree: Path) -> None:
    assert validate_repo_path(str(tree / "allowed" / "repo"), []) == (tree / "allowed" / "repo").resolve()


def test_nonexistent_path(tree: Path) -> None:
    message = _error(str(tree / "nope"))
    assert "validation" in message
    assert "not found" in message
    assert str(tree / "nope") in message


def test_a_file_is_not_a_directory(tree: Path) -> None:
    message = _error(str(tree / "allowed" / "file.txt"))
    assert "validation" in message
    assert "not a directory" in message


@pytest.mark.parametrize("relative", ["repo", "./repo", "../repo", "allowed/repo"])
def test_relative_paths_are_rejected(tree: Path, relative: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)  # so "allowed/repo" would exist relative to the cwd
    message = _error(relative)
    assert "validation" in message
    assert "absolute" in message


@pytest.mark.parametrize("bad", ["", "   ", "/tmp/has\x00nul"])
def test_empty_or_nul_paths_are_rejected(bad: str) -> None:
    assert "validation" in _error(bad)


def test_allowed_roots_accept_paths_inside(tree: Path) -> None:
    allowed = [tree / "allowed"]
    assert validate_repo_path(str(tree / "allowed" / "repo" / "sub"), allowed) == tree / "allowed" / "repo" / "sub"
    assert validate_repo_path(str(tree / "allowed"), allowed) == tree / "allowed"


def test_allowed_roots_reject_paths_outside(tree: Path) -> None:
    message = _error(str(tree / "outside" / "repo"), [tree / "allowed"])
    assert "validation" in message
    assert "outside the allowed roots" in message


def test_allowed_roots_are_not_string_prefixes(tree: Path) -> None:
    assert "outside the allowed roots" in _error(str(tree / "allowed-evil" / "repo"), [tree / "allowed"])


def test_dot_dot_cannot_escape_an_allowed_root(tree: Path) -> None:
    sneaky = str(tree / "allowed" / "repo" / ".." / ".." / "outside" / "repo")
    assert "outside the allowed roots" in _error(sneaky, [tree / "allowed"])


def test_symlink_inside_an_allowed_root_to_outside_is_rejected(tree: Path) -> None:
    os.symlink(tree / "outside" / "repo", tree / "allowed" / "link")
    assert "outside the allowed roots" in _error(str(tree / "allowed" / "link"), [tree / "allowed"])


def test_symlink_from_outside_into_an_allowed_root_is_accepted_as_its_target(tree: Path) -> None:
    os.symlink(tree / "allowed" / "repo", tree / "outside" / "link")
    resolved = validate_repo_path(str(tree / "outside" / "link"), [tree / "allowed"])
    assert resolved == (tree / "allowed" / "repo").resolve()


def test_allowed_root_given_through_a_symlink(tree: Path) -> None:
    os.symlink(tree / "allowed", tree / "alias")
    assert validate_repo_path(str(tree / "allowed" / "repo"), [tree / "alias"]) == tree / "allowed" / "repo"
    assert "outside the allowed roots" in _error(str(tree / "outside" / "repo"), [tree / "alias"])


def test_any_of_several_roots_suffices(tree: Path) -> None:
    roots = [tree / "allowed", tree / "outside"]
    assert validate_repo_path(str(tree / "outside" / "repo"), roots) == tree / "outside" / "repo"
    assert "outside the allowed roots" in _error(str(tree / "allowed-evil" / "repo"), roots)


def test_home_directory_is_expanded(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tree / "allowed"))
    assert validate_repo_path("~/repo", []) == tree / "allowed" / "repo"


def test_valid_job_ids_parse() -> None:
    job = uuid.uuid4()
    assert parse_job_id(str(job)) == job
    assert parse_job_id(f"  {job}\n") == job
    assert parse_job_id(str(job).upper()) == job


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-a-uuid",
        "123",
        "123e4567-e89b-12d3-a456-42661417400",
        "123e4567-e89b-12d3-a456-42661417400g",
        "'; DROP TABLE indexing_jobs; --",
        None,
    ],
)
def test_malformed_job_ids_are_validation_errors(bad: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_job_id(bad)
    assert "validation" in str(raised.value)
    assert "UUID" in str(raised.value)


def test_symlink_loop_is_a_validation_error(tree: Path) -> None:
    os.symlink(tree / "allowed" / "loop-b", tree / "allowed" / "loop-a")
    os.symlink(tree / "allowed" / "loop-a", tree / "allowed" / "loop-b")
    message = _error(str(tree / "allowed" / "loop-a"))
    assert message.startswith("validation error: repository path ")
    assert "symlink loop" in message


def test_overlong_component_is_a_validation_error(tree: Path) -> None:
    message = _error(str(tree / ("a" * 300)))
    assert message.startswith("validation error: repository path ")
    assert "cannot be" in message
    assert len(message) < 500


def test_overlong_path_is_refused_before_touching_the_filesystem() -> None:
    message = _error("/" + "a/" * 3000)
    assert "at most 4,096" in message


def test_lone_surrogate_is_a_validation_error() -> None:
    assert "not valid Unicode" in _error("/tmp/\udc80repo")


def test_unknown_user_home_is_a_validation_error() -> None:
    assert "home directory" in _error("~no-such-user-cbm/repo")


def test_unreadable_directory_is_refused(tmp_path: Path) -> None:
    """chmod 000 stops everybody but root (CAP_DAC_OVERRIDE); as root, the check runs in a child
    process stripped of the capabilities that bypass permissions, like an unprivileged server."""
    import shutil
    import subprocess
    import sys

    base = Path(tempfile.mkdtemp(prefix="cbm-unreadable-"))  # /tmp, reachable without privileges
    locked = base / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        if os.geteuid() != 0:
            message = _error(str(locked))
        else:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE to test this")
            caps = "-dac_override,-dac_read_search"
            code = (
                "import sys; from server.service import validate_repo_path; from server.errors import ValidationError\n"
                "try: validate_repo_path(sys.argv[1], [])\n"
                "except ValidationError as error: print(error)\n"
                "else: print('ACCEPTED')\n"
            )
            done = subprocess.run(
                ["setpriv", "--bounding-set", caps, "--inh-caps", caps, sys.executable, "-c", code, str(locked)],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            )
            assert done.returncode == 0, done.stderr
            message = done.stdout.strip()
        assert message == f"validation error: repository path {locked} is not readable by the server"
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_an_unresolvable_path_outside_the_roots_reveals_nothing(tree: Path) -> None:
    os.symlink(tree / "outside" / "loop-b", tree / "outside" / "loop-a")
    os.symlink(tree / "outside" / "loop-a", tree / "outside" / "loop-b")
    message = _error(str(tree / "outside" / "loop-a"), [tree / "allowed"])
    assert "outside the allowed roots" in message
    assert "loop" not in message.split(" is outside")[1]
    assert "outside the allowed roots" in _error(str(tree / "outside" / ("n" * 300)), [tree / "allowed"])
