"""The webhook sender against a loopback receiver that verifies with ``standardwebhooks``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import wait_until
from webhook_receiver import Receiver, new_secret, write_secret

from astrowatch.core.config import EventsConfig, WebhookConfig
from astrowatch.core.errors import ConfigError
from astrowatch.core.jobs import JobKind, JobState
from astrowatch.runtime.webhooks import EndpointSender, Refused, forbidden, post
from astrowatch.storage.ledger import Ledger

pytest.importorskip("standardwebhooks")


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite3")


def _sender(tmp_path: Path, ledger: Ledger, url: str, *secrets: str, schedule=(0.0, 0.2, 0.2), **hook) -> EndpointSender:
    cfg = WebhookConfig(url=url, secret_file=write_secret(tmp_path, *secrets), **hook)
    return EndpointSender(ledger, cfg, EventsConfig(retry_schedule=list(schedule), timeout_seconds=2))


def _queue(ledger: Ledger, name: str = "a.jpg"):
    return ledger.create_job(kind=JobKind.ENHANCE, user="gaby", source=f"Utilisateurs/gaby/{name}",
                             source_sha256="cd" * 32)


def test_signed_delivery_verifies_and_rotation_signs_twice(tmp_path) -> None:
    old, new = new_secret(), new_secret()
    ledger = _ledger(tmp_path)
    with Receiver(old) as rx_old, Receiver(new) as rx_new:
        senders = [_sender(tmp_path / "a", ledger, rx_old.url, old, new), _sender(tmp_path / "b", ledger, rx_new.url, new)]
        job = _queue(ledger)
        for s in senders:
            s.round()
        for rx in (rx_old, rx_new):
            (msg,) = rx.ok()
            assert msg["payload"]["type"] == "job.queued" and msg["payload"]["data"]["job_id"] == job.id
            assert msg["id"] == ledger.events_after(0)[0].msg_id
        assert len(rx_old.received[0]["signature"].split(" ")) == 2  # both secrets of a rotation sign
        assert not rx_old.rejected and not rx_new.rejected


def test_a_wrong_secret_is_rejected_by_the_verifier(tmp_path) -> None:
    ledger = _ledger(tmp_path)
    with Receiver(new_secret()) as rx:
        sender = _sender(tmp_path, ledger, rx.url, new_secret())
        _queue(ledger)
        sender.round()
        assert rx.rejected and not rx.ok()  # the check of the test is able to fail


def test_retries_keep_the_webhook_id_then_fail(tmp_path) -> None:
    secret = new_secret()
    ledger = _ledger(tmp_path)
    with Receiver(secret, status=500) as rx:
        sender = _sender(tmp_path, ledger, rx.url, secret, schedule=(0.0, 0.3, 0.3))
        _queue(ledger)
        sender.round()
        assert len(rx.received) == 1
        sender.round()
        assert len(rx.received) == 1  # not due yet: the stored next_at holds it back
        wait_until(lambda: (sender.round(), len(rx.received) == 3)[1], timeout=5)
        assert len({r["id"] for r in rx.received}) == 1
        (row,) = ledger.deliveries()
        assert row["state"] == "failed" and row["attempts"] == 3 and row["last_error"] == "HTTP 500"
        sender.round()
        assert len(rx.received) == 3  # failed for good: no more tries


def test_backoff_survives_a_new_sender(tmp_path) -> None:
    """The schedule lives in the ledger: a restarted daemon does not retry a message early."""
    secret = new_secret()
    ledger = _ledger(tmp_path)
    with Receiver(secret, status=503) as rx:
        first = _sender(tmp_path, ledger, rx.url, secret, schedule=(0.0, 3600.0))
        _queue(ledger)
        first.round()
        assert len(rx.received) == 1
        rx.status = 200
        again = _sender(tmp_path, ledger, rx.url, secret, schedule=(0.0, 3600.0))
        again.round()
        assert len(rx.received) == 1 and ledger.deliveries()[0]["next_at"] > time.time() + 3000


def test_redirects_are_not_followed(tmp_path) -> None:
    secret = new_secret()
    ledger = _ledger(tmp_path)
    with Receiver(secret, status=302) as rx:
        sender = _sender(tmp_path, ledger, rx.url, secret)
        _queue(ledger)
        sender.round()
        assert ledger.deliveries()[0]["last_error"].startswith("HTTP 302 (redirects are not followed)")


def test_a_dead_receiver_does_not_block_another(tmp_path) -> None:
    secret = new_secret()
    ledger = _ledger(tmp_path)
    with Receiver(secret) as rx:
        dead = _sender(tmp_path / "d", ledger, "http://127.0.0.1:9/nothing-listens", secret)
        live = _sender(tmp_path / "l", ledger, rx.url, secret)
        dead.start()
        live.start()
        try:
            _queue(ledger)
            wait_until(lambda: rx.types() == ["job.queued"], timeout=5)
        finally:
            dead.stop()
            live.stop()


def test_link_local_targets_are_refused() -> None:
    assert forbidden("169.254.169.254") and forbidden("fd00:ec2::254") and forbidden("::ffff:169.254.1.1")
    assert forbidden("fe80::1") and not forbidden("127.0.0.1") and not forbidden("10.0.0.1")
    with pytest.raises(Refused):
        post("http://169.254.169.254/latest/meta-data", b"{}", {}, timeout=1)


def test_secret_file_must_hold_whsec_secrets(tmp_path) -> None:
    ledger = _ledger(tmp_path)
    with pytest.raises(ConfigError, match="whsec_"):
        _sender(tmp_path, ledger, "http://127.0.0.1:9/x", "not-a-secret")
    loose = write_secret(tmp_path / "loose", new_secret())
    loose.chmod(0o666)
    with pytest.raises(ConfigError):
        EndpointSender(ledger, WebhookConfig(url="http://127.0.0.1:9/x", secret_file=loose), EventsConfig())


def test_job_states_reach_the_receiver_in_order(tmp_path) -> None:
    secret = new_secret()
    ledger = _ledger(tmp_path)
    with Receiver(secret) as rx:
        sender = _sender(tmp_path, ledger, rx.url, secret, events=["job.inbox", "job.rejected"])
        job = _queue(ledger)
        for frm, to in [(JobState.QUEUED, JobState.RUNNING), (JobState.RUNNING, JobState.PUBLISHING),
                        (JobState.PUBLISHING, JobState.INBOX), (JobState.INBOX, JobState.DECIDING),
                        (JobState.DECIDING, JobState.REJECTED)]:
            ledger.transition(job.id, frm, to)
        sender.round()
        assert rx.types() == ["job.inbox", "job.rejected"]  # only the types it asked for
