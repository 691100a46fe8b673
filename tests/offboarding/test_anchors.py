"""Anchors: rows cut from the end of the audit log are noticed, as far as anchors reach."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from offboarding.cli import app
from offboarding.domain import audit
from offboarding.domain.anchors import (
    ANCHOR_FILE,
    ANCHORED,
    Anchor,
    AnchorFileError,
    FileAnchorSink,
    anchor_if_moved,
    head,
    read_anchors,
    verify_against_anchors,
    write_anchor,
)
from offboarding.domain.models import AuditEvent, utcnow


def fill(engine: Engine, n: int) -> None:
    for i in range(n):
        audit.record(engine, action="test.event", actor="tester", case_id="c1", details={"i": i})


def cut_from(engine: Engine, seq: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq >= :seq"), {"seq": seq})


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture
def sink(tmp_path: Path) -> FileAnchorSink:
    return FileAnchorSink(tmp_path / "anchors" / ANCHOR_FILE)


def test_an_anchor_is_the_head_before_its_own_anchored_event(
    engine: Engine, sink: FileAnchorSink
) -> None:
    assert head(engine).seq == 0 and head(engine).hash == audit.GENESIS
    fill(engine, 3)
    anchor = write_anchor(engine, sink)
    assert (anchor.seq, anchor.count) == (3, 3)
    [line] = [json.loads(line) for line in lines_of(sink.path)]
    assert line["n"] == 1 and line["seq"] == 3 and line["prev"] == audit.GENESIS
    with Session(engine) as session:
        third = session.get(AuditEvent, 3)
        event = session.get(AuditEvent, 4)
    assert third is not None and anchor.hash == line["hash"] == third.hash
    assert event is not None and event.action == ANCHORED
    assert json.loads(event.details)["seq"] == 3 and json.loads(event.details)["n"] == 1
    report = verify_against_anchors(engine, read_anchors(sink.path))
    assert report.ok and report.anchors == 1 and report.newest == anchor
    assert report.uncovered == 1  # the anchored event itself waits for the next anchor
    second = write_anchor(engine, sink)
    assert second.seq == 4 and json.loads(lines_of(sink.path)[1])["n"] == 2


def test_cutting_anchored_rows_is_reported_as_truncation(
    engine: Engine, sink: FileAnchorSink
) -> None:
    fill(engine, 5)
    write_anchor(engine, sink)  # sees seq 5, recorded as event 6
    fill(engine, 2)
    newest = write_anchor(engine, sink)  # sees seq 8, recorded as event 9
    cut_from(engine, 7)
    report = verify_against_anchors(engine, read_anchors(sink.path))
    assert report.chain.ok and report.chain.events == 6  # the chain alone cannot tell
    assert not report.ok
    assert report.problems == [
        f"truncated: the log ends at seq 6 but the anchor of {newest.when} saw seq 8 "
        f"with hash {newest.hash}"
    ]


def test_a_plain_list_of_anchors_catches_truncation_too(engine: Engine) -> None:
    fill(engine, 4)
    carried = head(engine)  # what an evidence pack would carry
    cut_from(engine, 4)
    report = verify_against_anchors(engine, [carried])
    assert not report.ok and report.problems[0].startswith("truncated: the log ends at seq 3")


def test_rows_after_the_newest_anchor_can_be_cut_unnoticed(
    engine: Engine, sink: FileAnchorSink
) -> None:
    fill(engine, 3)
    write_anchor(engine, sink)  # sees seq 3; event 4 records it
    fill(engine, 2)
    before = verify_against_anchors(engine, read_anchors(sink.path))
    assert before.ok and before.uncovered == 3
    cut_from(engine, 4)  # the anchored event and what followed: beyond every anchor
    after = verify_against_anchors(engine, read_anchors(sink.path))
    assert after.ok and after.head_seq == 3 and after.uncovered == 0  # the limit of anchoring


def test_a_forged_rewrite_of_an_anchored_row_is_reported(
    engine: Engine, sink: FileAnchorSink
) -> None:
    fill(engine, 4)
    anchor = write_anchor(engine, sink)
    # rewrite event 3 and re-hash everything after it: the chain alone verifies again
    with Session(engine, expire_on_commit=False) as session:
        events = list(
            session.exec(
                select(AuditEvent).where(AuditEvent.seq >= 3).order_by(col(AuditEvent.seq))
            )
        )
        prev = session.get(AuditEvent, 2)
        assert prev is not None
        previous_hash = prev.hash
        events[0].actor = "mallory"
        for event in events:
            event.prev_hash = previous_hash
            event.hash = audit.event_hash(event)
            previous_hash = event.hash
            session.add(event)
            session.flush()
        session.commit()
    report = verify_against_anchors(engine, read_anchors(sink.path))
    assert report.chain.ok and not report.ok
    assert report.problems[0].startswith(f"rewritten: event 4 has hash {events[1].hash}")
    assert f"saw hash {anchor.hash}" in report.problems[0]


def test_an_edited_anchor_line_is_reported(engine: Engine, sink: FileAnchorSink) -> None:
    fill(engine, 2)
    write_anchor(engine, sink)
    write_anchor(engine, sink)
    write_anchor(engine, sink)
    original = lines_of(sink.path)
    middle = json.loads(original[1])
    middle["seq"] = 1
    edited = [original[0], json.dumps(middle), original[2]]
    sink.path.write_text("\n".join(edited) + "\n")
    trail = read_anchors(sink.path)
    assert len(trail.anchors) == 1  # either side of the break may be the edited line
    problems = verify_against_anchors(engine, trail).problems
    assert len(problems) == 2, problems  # and no false claim about the log's event 1
    assert "chain breaks at line 3" in problems[0]
    assert "line 2 is not the anchor event 4 recorded" in problems[1]
    # the last line has no successor; the log's own record of it gives the edit away
    last = json.loads(original[2])
    last["hash"] = "0" * 64
    sink.path.write_text("\n".join([*original[:2], json.dumps(last)]) + "\n")
    problems = verify_against_anchors(engine, read_anchors(sink.path)).problems
    assert any("line 3 is not the anchor event" in problem for problem in problems), problems


def test_a_cut_or_missing_anchor_file_is_reported(engine: Engine, sink: FileAnchorSink) -> None:
    fill(engine, 2)
    write_anchor(engine, sink)
    write_anchor(engine, sink)
    original = sink.path.read_text()
    sink.path.write_text(original.splitlines(keepends=True)[0])
    problems = verify_against_anchors(engine, read_anchors(sink.path)).problems
    assert len(problems) == 1 and "was cut: event 4 records anchor #2" in problems[0]
    sink.path.write_text(original[:-5])
    problems = verify_against_anchors(engine, read_anchors(sink.path)).problems
    assert "its last line is incomplete (cut)" in problems[0]
    with pytest.raises(AnchorFileError, match="last line is incomplete"):
        write_anchor(engine, sink)
    sink.path.unlink()
    problems = verify_against_anchors(engine, read_anchors(sink.path)).problems
    assert problems == [
        f"anchor file {sink.path.resolve()} is missing, but event 3 records anchor #1 written to it"
    ]


def test_anchor_if_moved_skips_an_idle_log(engine: Engine, sink: FileAnchorSink) -> None:
    fill(engine, 1)
    assert anchor_if_moved(engine, sink) is not None
    assert anchor_if_moved(engine, sink) is None
    fill(engine, 1)
    assert anchor_if_moved(engine, sink) is not None
    assert len(lines_of(sink.path)) == 2


def test_threads_anchoring_at_once_keep_the_file_a_chain(
    engine: Engine, sink: FileAnchorSink
) -> None:
    start = threading.Barrier(6)

    def work(worker: int) -> None:
        start.wait()
        for i in range(5):
            audit.record(engine, action="race", actor=f"w{worker}", details={"i": i})
            write_anchor(engine, FileAnchorSink(sink.path))  # own file descriptor each time

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trail = read_anchors(sink.path)
    assert trail.problems == [] and len(trail.anchors) == 30
    report = verify_against_anchors(engine, trail)
    assert report.ok, report.problems
    assert report.chain.events == 60


WRITER = """
import sys
from pathlib import Path
from offboarding.domain.anchors import FileAnchorSink, write_anchor
from offboarding.wiring.db import make_engine
url, path, count = sys.argv[1:]
sink = FileAnchorSink(Path(path))
engine = make_engine(url)
print("ready", flush=True)
sys.stdin.readline()
for _ in range(int(count)):
    write_anchor(engine, sink, actor="writer")
"""


def run_writers(database_url: str, path: Path, count: int, processes: int) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, database_url, str(path), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for writer in writers:  # all have imported everything; release them together
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.close()
    assert [writer.wait(timeout=120) for writer in writers] == [0] * processes


def test_processes_anchoring_at_once_keep_the_file_a_chain(
    engine: Engine, database_url: str, sink: FileAnchorSink
) -> None:
    fill(engine, 1)
    run_writers(database_url, sink.path, 15, processes=2)
    trail = read_anchors(sink.path)
    assert trail.problems == [] and len(trail.anchors) == 30
    assert verify_against_anchors(engine, trail).ok


def test_threads_appending_flat_out_keep_the_file_a_chain(sink: FileAnchorSink) -> None:
    anchor = Anchor(seq=1, hash="a" * 64, count=1, at=utcnow())
    start = threading.Barrier(4)

    def append() -> None:
        start.wait()
        for _ in range(150):  # as fast as appends go: only the lock keeps the chain
            FileAnchorSink(sink.path).publish(anchor)

    threads = [threading.Thread(target=append) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trail = read_anchors(sink.path)
    assert trail.problems == [] and len(trail.anchors) == 600


# -- the commands -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("OFFBOARDING_DATABASE_URL", database_url)
    monkeypatch.setenv("OFFBOARDING_HOME", str(home))
    return home


def test_cli_anchor_and_verify(engine: Engine, cli_env: Path) -> None:
    runner = CliRunner()
    fill(engine, 3)
    unanchored = runner.invoke(app, ["audit", "verify"])
    assert unanchored.exit_code == 0, unanchored.output
    assert "chain of 3 events intact" in unanchored.output
    assert "no anchors in" in unanchored.output and "cannot be detected" in unanchored.output
    anchored = runner.invoke(app, ["audit", "anchor"])
    assert anchored.exit_code == 0, anchored.output
    assert "Anchored seq 3" in anchored.output
    assert (cli_env / ANCHOR_FILE).is_file()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "chain of 4 events intact" in ok.output and "hash chain verified" in ok.output
    assert "consistent with 1 anchor, newest at seq 3 of" in ok.output
    assert "1 event(s) after seq 3 are not anchored yet" in ok.output
    cut_from(engine, 3)
    cut = runner.invoke(app, ["audit", "verify"])
    assert cut.exit_code == 1
    assert "Audit log BROKEN: truncated: the log ends at seq 2 but the anchor of" in cut.output
    assert "saw seq 3 with hash" in cut.output


def test_cli_verify_with_an_anchor_file_elsewhere(
    engine: Engine, cli_env: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    elsewhere = tmp_path / "offsite" / "anchors.jsonl"
    fill(engine, 2)
    assert runner.invoke(app, ["audit", "anchor", "--anchors", str(elsewhere)]).exit_code == 0
    ok = runner.invoke(app, ["audit", "verify", "--anchors", str(elsewhere)])
    assert ok.exit_code == 0 and "newest at seq 2" in ok.output, ok.output
    default = runner.invoke(app, ["audit", "verify"])  # the default file was never written
    assert default.exit_code == 0 and "no anchors in" in default.output, default.output
    elsewhere.unlink()  # but the log remembers where its anchors went
    gone = runner.invoke(app, ["audit", "verify", "--anchors", str(elsewhere)])
    assert gone.exit_code == 2 and f"No anchor file at {elsewhere}" in gone.output
    absent = runner.invoke(app, ["audit", "verify", "--anchors", str(tmp_path / "nope.jsonl")])
    assert absent.exit_code == 2
    assert f"No anchor file at {tmp_path / 'nope.jsonl'}" in absent.output
