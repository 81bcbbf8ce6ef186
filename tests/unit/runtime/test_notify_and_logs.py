"""systemd notification over a real datagram socket; JSON Lines logs that survive torn lines."""

from __future__ import annotations

import json
import socket

from astrowatch.runtime.notify import Notifier
from astrowatch.storage.jsonlog import append_jsonl, read_jsonl


def test_notifier_sends_datagrams_to_notify_socket(tmp_path):
    path = str(tmp_path / "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    n = Notifier(path)
    n.ready("idle")
    n.watchdog()
    n.stopping()
    got = [sock.recv(4096).decode() for _ in range(3)]
    assert got[0].startswith("READY=1\nSTATUS=idle\nMAINPID=")
    assert got[1:] == ["WATCHDOG=1", "STOPPING=1"]
    sock.close()


def test_notifier_without_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier().send("READY=1") is False


def test_notifier_reports_a_dead_socket_instead_of_raising(tmp_path):
    assert Notifier(str(tmp_path / "missing.sock")).send("READY=1") is False


def test_watchdog_interval_read_from_environment(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Notifier(None).watchdog_seconds == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # for another process
    assert Notifier(None).watchdog_seconds is None


def test_jsonl_appends_whole_lines_and_tolerates_a_torn_last_line(tmp_path):
    path = tmp_path / "logs" / "generations.jsonl"
    append_jsonl(path, {"job_id": "a"})
    with open(path, "ab") as fh:
        fh.write(b'{"job_id": "torn')  # a crash mid-write
    append_jsonl(path, {"job_id": "b"})
    assert [r["job_id"] for r in read_jsonl(path)] == ["a", "b"]
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["ts"] and lines[1] == '{"job_id": "torn'


def test_a_reader_that_stops_reading_never_blocks_the_daemon(tmp_path):
    path = str(tmp_path / "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)  # bound, never read: its queue fills up
    n = Notifier(path)
    results = [n.status(f"line {i}") for i in range(500)]  # would hang forever with a blocking send
    assert results.count(None) == 500  # status() returns nothing; the point is that we got here
    assert n.send("WATCHDOG=1") is False  # queue full: dropped, not blocked
    sock.close()
