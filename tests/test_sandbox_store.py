"""The sandbox store: secrets sealed at rest, and databases from older versions still open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.fernet import Fernet

from gateway.catalog.config import ServerSettings
from gateway.store.sandboxes import Revocation, Sandbox, SandboxStore

SECRET = "sealed-secret-value-4411"


def test_secret_values_are_not_stored_in_plain_text(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path / "s.db", Fernet.generate_key().decode())
    store.put(Sandbox("a", {"fix": ServerSettings("fix", secrets={"fix.key": SECRET})}, pinned=("fix__*",)))
    again = store.get("a")
    store.close()
    assert again is not None and again.servers["fix"].secrets == {"fix.key": SECRET}
    assert again.pinned == ("fix__*",)
    assert SECRET.encode() not in (tmp_path / "s.db").read_bytes()


def test_a_database_without_the_pinned_column_is_upgraded(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE sandboxes (id TEXT PRIMARY KEY, servers TEXT NOT NULL, sealed BLOB NOT NULL,"
        " created_at REAL NOT NULL, expires_at REAL, discovery TEXT NOT NULL)"
    )
    old.execute(
        "INSERT INTO sandboxes VALUES (?, ?, ?, ?, ?, ?)", ("b", "[]", Fernet(key).encrypt(b"{}"), 1.0, None, "auto")
    )
    old.commit()
    old.close()
    store = SandboxStore(path, key)
    sandbox = store.get("b")
    store.close()
    assert sandbox is not None and sandbox.pinned == () and sandbox.servers == {}
    assert sandbox.generation == ""  # its tokens, minted before generations, carry no 'gen' claim


def test_sandboxes_stored_under_ids_outside_the_rule_are_erased_on_open(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    path = tmp_path / "old.db"
    SandboxStore(path, key).close()
    old = sqlite3.connect(path)
    sealed = Fernet(key).encrypt(b"{}")
    for sandbox_id in ("sbx_0011", "Team.A", "kept-1"):
        old.execute(
            "INSERT INTO sandboxes (id, servers, sealed, created_at, discovery) VALUES (?, '[]', ?, 1.0, 'auto')",
            (sandbox_id, sealed),
        )
    old.commit()
    old.close()
    store = SandboxStore(path, key)
    ids = [s.id for s in store.all()]
    store.close()
    assert ids == ["kept-1"]


def test_put_keeps_the_stored_generation(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path / "s.db", Fernet.generate_key().decode())
    first = store.put(Sandbox("default", {}))
    second = store.put(Sandbox("default", {"fix": ServerSettings("fix")}))
    stored = store.get("default")
    store.close()
    assert first.generation and second.generation == first.generation
    assert stored is not None and stored.generation == first.generation and list(stored.servers) == ["fix"]


def test_a_sandbox_created_again_under_an_id_has_a_new_generation(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path / "s.db", Fernet.generate_key().decode())
    store.create(Sandbox("team", {}))
    before = store.generation("team")
    store.delete("team")
    store.create(Sandbox("team", {}))
    after = store.generation("team")
    store.close()
    assert before and after and before != after


def test_revocations_survive_reopening_and_are_pruned_after_their_expiry(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    store = SandboxStore(tmp_path / "s.db", key)
    store.revoke(Revocation("a", "live", 2000.0))
    store.revoke(Revocation("a", "past", 1000.0))
    store.revoke(Revocation("b", "forever", None))
    store.close()
    store = SandboxStore(tmp_path / "s.db", key)
    kept = {(r.sandbox, r.jti) for r in store.revocations(now=1500.0)}
    again = {(r.sandbox, r.jti) for r in store.revocations(now=0.0)}
    store.close()
    assert kept == {("a", "live"), ("b", "forever")}
    assert again == kept  # the expired one was deleted, not just hidden
