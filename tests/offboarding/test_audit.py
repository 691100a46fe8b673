from __future__ import annotations

import threading

from sqlalchemy import text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from offboarding.cli import app
from offboarding.domain import audit


def fill(engine: Engine, n: int = 5) -> None:
    for i in range(n):
        audit.record(engine, action="test.event", actor="tester", case_id="c1", details={"i": i})


def test_an_untouched_chain_verifies(engine: Engine) -> None:
    fill(engine)
    report = audit.verify_chain(engine)
    assert report.ok and report.events == 5


def test_an_edited_event_is_named(engine: Engine) -> None:
    fill(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET details = :d WHERE seq = 3"), {"d": '{"i":99}'})
    report = audit.verify_chain(engine)
    assert not report.ok and report.first_bad_seq == 3 and "changed" in report.problem


def test_a_deleted_event_is_named(engine: Engine) -> None:
    fill(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq = 2"))
    report = audit.verify_chain(engine)
    assert not report.ok and report.first_bad_seq == 3 and "missing" in report.problem


def test_reordered_events_are_detected(engine: Engine) -> None:
    fill(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET seq = 100 WHERE seq = 2"))
        conn.execute(text("UPDATE audit_event SET seq = 2 WHERE seq = 4"))
        conn.execute(text("UPDATE audit_event SET seq = 4 WHERE seq = 100"))
    report = audit.verify_chain(engine)
    assert not report.ok and report.first_bad_seq == 2


def test_once_key_records_only_once(engine: Engine) -> None:
    first = audit.record(engine, action="x", actor="a", once_key="k1")
    second = audit.record(engine, action="x", actor="a", once_key="k1")
    assert first is not None and second is None
    assert audit.verify_chain(engine).events == 1


def test_concurrent_writers_keep_one_chain(engine: Engine) -> None:
    def write(worker: int) -> None:
        for i in range(10):
            audit.record(engine, action="race", actor=f"w{worker}", details={"i": i})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = audit.verify_chain(engine)
    assert report.ok and report.events == 80


def test_cli_audit_verify_exit_codes(
    engine: Engine, database_url: str, monkeypatch, tmp_path
) -> None:
    fill(engine, 3)
    monkeypatch.setenv("OFFBOARDING_DATABASE_URL", database_url)
    monkeypatch.setenv("OFFBOARDING_HOME", str(tmp_path))
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "3 events" in ok.output
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = 2"))
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1
    assert "event 2" in bad.output


def test_cli_audit_show_prints_a_case_trail(
    engine: Engine, database_url: str, monkeypatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    fill(engine, 2)
    audit.record(engine, action="other", actor="x", case_id="c2")
    monkeypatch.setenv("OFFBOARDING_DATABASE_URL", database_url)
    monkeypatch.setenv("OFFBOARDING_HOME", str(tmp_path))
    shown = CliRunner().invoke(app, ["audit", "show", "c1"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("test.event") == 2 and "other" not in shown.output
    assert CliRunner().invoke(app, ["audit", "show", "nope"]).exit_code == 1
