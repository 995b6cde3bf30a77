"""The secret scanner gate (scripts/check_secrets.py, detect-secrets) fails on planted secrets and
passes on clean trees; the baseline lets audited findings through and nothing else.

The planted values are assembled at run time: this file holds no key the scanner of ``make lint``
would find in the repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "check_secrets.py"
AWS_KEY_ID = "AKIA" + "Q7XW4PZ2M6B3K9TD"  # the shape of an access key id, no real account
PRIVATE_KEY = ("-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA" + "x" * 60
               + "\n-----END " + "RSA PRIVATE KEY-----\n")


def scan(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), "--jobs", "1", *args],
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "roles" / "web" / "defaults").mkdir(parents=True)
    (tmp_path / "roles" / "web" / "defaults" / "main.yml").write_text("---\nweb_port: 8080\nweb_user: www\n")
    (tmp_path / "README.md").write_text("Passwords live in the vault: `vault_pg_password: ...`\n")
    return tmp_path


def test_clean_tree_passes(tree: Path) -> None:
    proc = scan(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 files scanned, no secret outside the baseline" in proc.stdout


@pytest.mark.parametrize(("name", "content", "kind"), [
    ("group_vars/all.yml", f"---\naws_access_key_id: {AWS_KEY_ID}\n", "AWS Access Key"),
    ("files/tls.key", PRIVATE_KEY, "Private Key"),
])
def test_planted_secret_fails_naming_the_file_and_never_the_value(tree: Path, name: str, content: str,
                                                                  kind: str) -> None:
    (tree / name).parent.mkdir(parents=True, exist_ok=True)
    (tree / name).write_text(content)
    proc = scan(tree)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{name}:" in proc.stdout and kind in proc.stdout
    assert "possible secret(s)" in proc.stderr and "--update-baseline" in proc.stderr
    assert AWS_KEY_ID not in proc.stdout + proc.stderr and "MIIEowIBAAKCAQEA" not in proc.stdout + proc.stderr
    listed = json.loads(scan(tree, "--json").stdout)
    assert [(r["file"], r["type"]) for r in listed if r["type"] == kind] == [(name, kind)]


def test_scanner_skips_tool_caches_outside_git(tree: Path) -> None:
    (tree / ".venv" / "lib").mkdir(parents=True)
    (tree / ".venv" / "lib" / "creds.py").write_text(f"KEY = '{AWS_KEY_ID}'\n")
    assert scan(tree).returncode == 0


def test_baseline_lets_audited_findings_through_and_nothing_else(tree: Path) -> None:
    """In a git work tree: tracked and untracked (not ignored) files are scanned; an audited
    finding in the baseline passes even when its line moves; a new one fails."""
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    (tree / ".gitignore").write_text("ignored/\n")
    (tree / "tests").mkdir()
    fixture = tree / "tests" / "fixture.py"
    fixture.write_text(f"FAKE_KEY = '{AWS_KEY_ID}'  # made up for a test\n")
    subprocess.run(["git", "-C", str(tree), "add", "."], check=True)
    assert scan(tree).returncode == 1
    assert scan(tree, "--update-baseline").returncode == 0
    assert (tree / ".secrets.baseline").exists()
    fixture.write_text("\n\n" + fixture.read_text())  # the line moves
    proc = scan(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tree / "ignored").mkdir()
    (tree / "ignored" / "key.pem").write_text(PRIVATE_KEY)  # .gitignore'd: not the repository's
    assert scan(tree).returncode == 0
    (tree / "new.pem").write_text(PRIVATE_KEY)  # untracked, not ignored: would be committed
    proc = scan(tree)
    assert proc.returncode == 1 and "new.pem:" in proc.stdout, proc.stdout + proc.stderr


def test_cached_results_still_fail_and_a_changed_file_is_rescanned(tree: Path) -> None:
    """make lint rescans only changed files: a planted secret is still reported from the cache,
    and gone once the file no longer holds it; --no-cache gives the same answers."""
    planted = tree / "group_vars" / "all.yml"
    planted.parent.mkdir()
    planted.write_text(f"---\naws_access_key_id: {AWS_KEY_ID}\n")
    first = scan(tree)
    assert first.returncode == 1 and (tree / ".cache" / "security" / "secrets-scan.json").exists()
    again = scan(tree)
    assert again.returncode == 1 and again.stdout == first.stdout
    assert scan(tree, "--no-cache").stdout == first.stdout
    planted.write_text("---\naws_access_key_id: \"{{ vault_aws_access_key_id }}\"\n")
    assert scan(tree).returncode == 0
    (tree / "README.md").write_text(f"key {AWS_KEY_ID}\n")  # an unchanged size is not what is compared
    assert scan(tree).returncode == 1


def test_unreadable_baseline_is_an_error_not_a_pass(tree: Path) -> None:
    (tree / ".secrets.baseline").write_text("{not json")
    proc = scan(tree)
    assert proc.returncode == 2 and "baseline" in proc.stderr


def test_help_documents_the_exit_codes() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "Exit codes:" in proc.stdout and "--update-baseline" in proc.stdout


def test_baseline_holds_no_absolute_path_and_works_in_another_clone(tree: Path, tmp_path_factory) -> None:
    """CI scans a fresh clone elsewhere: an audited finding must pass there too (the first baseline held
    this machine's absolute paths and every audited finding came back as new in CI's clone)."""
    (tree / "fixture.py").write_text(f"FAKE_KEY = '{AWS_KEY_ID}'  # made up for a test\n")
    assert scan(tree, "--update-baseline", "--no-cache").returncode == 0
    assert str(tree) not in (tree / ".secrets.baseline").read_text()
    elsewhere = tmp_path_factory.mktemp("clone") / "repo"
    subprocess.run(["cp", "-a", str(tree), str(elsewhere)], check=True)
    proc = scan(elsewhere, "--no-cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (elsewhere / "other.py").write_text(f"KEY = '{AWS_KEY_ID[:-1]}X'\n")
    assert scan(elsewhere, "--no-cache").returncode == 1


def test_repository_baseline_is_portable() -> None:
    assert str(ROOT) not in (ROOT / ".secrets.baseline").read_text()
