from __future__ import annotations

import json
from pathlib import Path

import pytest

from kizuna_kit.auth import ApiKeys, KeyFileError, issue_keys


def test_issued_keys_authenticate_with_their_scopes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    tokens = issue_keys(path, {"admin": {"a:read", "a:write"}, "auditor": {"a:read"}})
    keys = ApiKeys.load(path)
    admin = keys.authenticate(f"Bearer {tokens['admin']}")
    assert admin is not None
    assert admin.scopes == {"a:read", "a:write"}
    auditor = keys.authenticate(f"Bearer {tokens['auditor']}")
    assert auditor is not None
    assert auditor.scopes == {"a:read"}
    # The file holds salted digests only.
    text = path.read_text()
    assert tokens["admin"].split(".")[2] not in text
    assert path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic abc",
        "Bearer ",
        "Bearer kz.admin",
        "Bearer kz.nobody.secret",
        "Bearer xx.admin.secret",
    ],
)
def test_bad_headers_are_refused(tmp_path: Path, header: str | None) -> None:
    issue_keys(tmp_path / "k.json", {"admin": {"x"}})
    assert ApiKeys.load(tmp_path / "k.json").authenticate(header) is None


def test_a_wrong_secret_is_refused(tmp_path: Path) -> None:
    tokens = issue_keys(tmp_path / "k.json", {"admin": {"x"}})
    forged = tokens["admin"][:-2] + ("AA" if not tokens["admin"].endswith("AA") else "BB")
    assert ApiKeys.load(tmp_path / "k.json").authenticate(f"Bearer {forged}") is None


def test_malformed_files_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        ApiKeys.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"keys": [{"id": "x"}]}))
    with pytest.raises(KeyFileError, match="malformed"):
        ApiKeys.load(tmp_path / "bad.json")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_changed_key_file_is_followed_without_a_restart(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys.json", Clock()
    old = issue_keys(path, {"admin": {"x"}})["admin"]
    keys = ApiKeys.load(path, recheck_seconds=5, clock=clock)
    new = issue_keys(path, {"admin": {"x"}, "crm": {"y"}})  # the old admin key is revoked
    assert keys.authenticate(f"Bearer {old}") is not None  # not looked at yet
    clock.now += 5
    assert keys.authenticate(f"Bearer {old}") is None
    crm = keys.authenticate(f"Bearer {new['crm']}")
    assert crm is not None
    assert crm.scopes == {"y"}
    assert keys.authenticate(f"Bearer {new['admin']}") is not None


def test_a_key_file_that_cannot_be_read_leaves_the_keys_in_use(tmp_path: Path) -> None:
    path, clock = tmp_path / "keys.json", Clock()
    admin = "Bearer " + issue_keys(path, {"admin": {"x"}})["admin"]
    keys = ApiKeys.load(path, recheck_seconds=1, clock=clock)
    path.write_text("{half a file")
    clock.now += 1
    assert keys.authenticate(admin) is not None
    path.unlink()
    clock.now += 1
    assert keys.authenticate(admin) is not None
    crm = "Bearer " + issue_keys(path, {"crm": {"y"}})["crm"]
    clock.now += 1
    assert keys.authenticate(admin) is None
    assert keys.authenticate(crm) is not None
