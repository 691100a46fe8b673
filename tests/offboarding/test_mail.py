"""Mail goes out through a real SMTP server (aiosmtpd, in-process) or into an outbox folder."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import re
import socket
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from structlog.testing import capture_logs

from offboarding.domain.text import BIDI_CONTROLS, ZERO_WIDTH
from offboarding.notification.mail import (
    MailError,
    OutboxMailer,
    OutgoingEmail,
    PermanentMailError,
    SmtpMailer,
    TransientMailError,
    build_message,
)
from offboarding.notification.rendering import render_email, template_env

SENDER = "Offboarding <offboarding@example.nl>"
LINK = "https://offboarding.example.nl/approvals/c-2025-0042?token=abc.def&lang=nl"
PASSWORD = "s3cret-Wachtwoord!"


def text_links(text: str) -> list[str]:
    return re.findall(r"https?://\S+", text)


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def html_links(html: str) -> list[str]:
    parser = _Anchors()
    parser.feed(html)
    return parser.hrefs


def approval_email(
    leaver_name: str = "Zoë Ëmans", approver_name: str = "Jeroen Bakker"
) -> OutgoingEmail:
    rendered = render_email(
        template_env(),
        "approval_request",
        "nl",
        {
            "approver": {"display_name": approver_name},
            "leaver": {
                "employee_id": "E1042",
                "display_name": leaver_name,
                "email": "zoe.emans@example.nl",
            },
            "requester": {"employee_id": "E0007", "display_name": "Mieke Jansen"},
            "case_id": "c-2025-0042",
            "last_working_day": "2025-01-31",
            "urgent": True,
            "plan": [
                {
                    "connector": "directory",
                    "kind": "membership",
                    "label": "Lid van Finance",
                    "target": "cn=finance,ou=groups,dc=example,dc=nl",
                }
            ],
            "plan_hash": "3f9a1c0d7be2" + "0" * 52,
            "link": LINK,
            "expires_at": "3 februari 2025, 17:00",
        },
    )
    return OutgoingEmail(
        to=["Jeroen Bakker <jeroen.bakker@example.nl>"],
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        reply_to="servicedesk@example.nl",
    )


def parse(raw: bytes | str | None) -> EmailMessage:
    assert isinstance(raw, bytes)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- a real SMTP peer ---------------------------------------------------------------------


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what it receives, or answers with a chosen reply."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply and address.startswith("refuse"):
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.logins.append(data.login.decode())
        ok = data.login == b"offboarding" and data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)


@dataclass
class Server:
    port: int
    recorder: Recorder


@pytest.fixture
def smtp_peer() -> Iterator[Server]:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield Server(port=controller.port, recorder=recorder)
    finally:
        controller.stop()


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    pem: str


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, trusted only by contexts that load it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "offboarding test smtp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (folder / "cert.pem").write_text(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert=folder / "cert.pem", key=folder / "key.pem", pem=pem)


@pytest.fixture
def tls_smtp_peer(certificate: Certificate) -> Iterator[Server]:
    """An SMTP server that requires STARTTLS and a login, like a real submission port."""
    recorder = Recorder()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate.cert, certificate.key)
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=server_context,
        require_starttls=True,
        authenticator=recorder.authenticate,
        auth_require_tls=True,
        auth_required=True,
    )
    controller.start()
    try:
        yield Server(port=controller.port, recorder=recorder)
    finally:
        controller.stop()


def trusting(certificate: Certificate) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=certificate.pem)


# --- SmtpMailer ---------------------------------------------------------------------------


def test_smtp_delivers_multipart_utf8_mail(smtp_peer: Server) -> None:
    outgoing = approval_email()
    mailer = SmtpMailer(host="127.0.0.1", port=smtp_peer.port, sender=SENDER)

    with capture_logs() as logs:
        message_id = mailer.send(outgoing)

    [envelope] = smtp_peer.recorder.envelopes
    assert envelope.mail_from == "offboarding@example.nl"
    assert envelope.rcpt_tos == ["jeroen.bakker@example.nl"]
    raw = envelope.content
    assert isinstance(raw, bytes)
    raw.decode("ascii")  # every byte on the wire is 7-bit clean
    received = parse(raw)
    assert received["Message-ID"] == message_id
    assert message_id.endswith("@example.nl>")
    assert received["Subject"] == outgoing.subject
    assert "Zoë Ëmans" in received["Subject"]
    assert received["From"] == SENDER
    assert received["To"] == "Jeroen Bakker <jeroen.bakker@example.nl>"
    assert received["Reply-To"] == "servicedesk@example.nl"
    assert received["Date"]
    assert received.get_content_type() == "multipart/alternative"
    plain, html = (part for part in received.iter_parts())
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
    # SMTP carries CRLF line endings; the words themselves arrive unchanged.
    assert plain.get_content().replace("\r\n", "\n") == outgoing.text
    assert html.get_content().replace("\r\n", "\n") == outgoing.html
    assert text_links(plain.get_content()) == [LINK]
    assert html_links(html.get_content()) == [LINK]
    assert "ontslag op staande voet" in plain.get_content().lower()
    assert logs == [
        {"event": "mail.sent", "message_id": message_id, "recipients": 1, "log_level": "info"}
    ]


def test_smtp_starttls_and_login(tls_smtp_peer: Server, certificate: Certificate) -> None:
    mailer = SmtpMailer(
        host="127.0.0.1",
        port=tls_smtp_peer.port,
        sender=SENDER,
        starttls=True,
        username="offboarding",
        password=SecretStr(PASSWORD),
        ssl_context=trusting(certificate),
    )

    message_id = mailer.send(approval_email())

    [envelope] = tls_smtp_peer.recorder.envelopes
    assert parse(envelope.content)["Message-ID"] == message_id
    assert tls_smtp_peer.recorder.logins == ["offboarding"]


def test_smtp_verifies_the_server_certificate_by_default(tls_smtp_peer: Server) -> None:
    mailer = SmtpMailer(
        host="127.0.0.1",
        port=tls_smtp_peer.port,
        sender=SENDER,
        starttls=True,
        username="offboarding",
        password=SecretStr(PASSWORD),
    )

    with pytest.raises(PermanentMailError, match="certificate") as caught:
        mailer.send(approval_email())

    assert tls_smtp_peer.recorder.logins == []
    assert tls_smtp_peer.recorder.envelopes == []
    assert PASSWORD not in str(caught.value)


def test_smtp_wrong_password_is_permanent_and_never_shown(
    tls_smtp_peer: Server, certificate: Certificate
) -> None:
    wrong = "Niet-" + PASSWORD
    mailer = SmtpMailer(
        host="127.0.0.1",
        port=tls_smtp_peer.port,
        sender=SENDER,
        starttls=True,
        username="offboarding",
        password=SecretStr(wrong),
        ssl_context=trusting(certificate),
    )

    with pytest.raises(PermanentMailError) as caught:
        mailer.send(approval_email())

    error = caught.value
    assert error.smtp_code == 535
    assert "offboarding" in str(error)
    assert "password" in str(error)
    for shown in (str(error), repr(error), repr(error.args), repr(mailer)):
        assert wrong not in shown
    assert error.__cause__ is None
    assert tls_smtp_peer.recorder.envelopes == []


def test_smtp_refuses_to_send_without_the_required_starttls(tls_smtp_peer: Server) -> None:
    mailer = SmtpMailer(host="127.0.0.1", port=tls_smtp_peer.port, sender=SENDER)

    with pytest.raises(PermanentMailError) as caught:
        mailer.send(approval_email())

    assert caught.value.smtp_code == 530
    assert tls_smtp_peer.recorder.envelopes == []


def test_smtp_starttls_asked_of_a_server_without_it(smtp_peer: Server) -> None:
    mailer = SmtpMailer(host="127.0.0.1", port=smtp_peer.port, sender=SENDER, starttls=True)

    with pytest.raises(PermanentMailError, match="STARTTLS"):
        mailer.send(approval_email())
    assert smtp_peer.recorder.envelopes == []


@pytest.mark.parametrize(
    ("data_reply", "expected", "code"),
    [
        ("554 5.7.1 Message rejected by policy", PermanentMailError, 554),
        ("552 5.3.4 Message too big", PermanentMailError, 552),
        ("451 4.3.0 Temporary failure, try again later", TransientMailError, 451),
        ("421 4.3.2 Service shutting down", TransientMailError, 421),
    ],
)
def test_smtp_replies_map_to_transient_or_permanent(
    smtp_peer: Server, data_reply: str, expected: type[MailError], code: int
) -> None:
    smtp_peer.recorder.data_reply = data_reply
    mailer = SmtpMailer(host="127.0.0.1", port=smtp_peer.port, sender=SENDER)

    with pytest.raises(expected) as caught:
        mailer.send(approval_email())

    assert type(caught.value) is expected
    assert caught.value.smtp_code == code
    assert data_reply.split(" ", 1)[1] in str(caught.value)


def test_smtp_refused_recipient_is_permanent(smtp_peer: Server) -> None:
    smtp_peer.recorder.rcpt_reply = "550 5.1.1 No such user"
    outgoing = OutgoingEmail(to=["refused@example.nl"], subject="Test", text="t", html="<p>h</p>")
    mailer = SmtpMailer(host="127.0.0.1", port=smtp_peer.port, sender=SENDER)

    with pytest.raises(PermanentMailError, match=r"refused@example\.nl") as caught:
        mailer.send(outgoing)

    assert caught.value.smtp_code == 550
    assert smtp_peer.recorder.envelopes == []


def test_smtp_partly_refused_recipients_are_reported(smtp_peer: Server) -> None:
    smtp_peer.recorder.rcpt_reply = "450 4.2.1 Mailbox busy"
    outgoing = OutgoingEmail(
        to=["mieke@example.nl", "refused@example.nl"], subject="Test", text="t", html="<p>h</p>"
    )
    mailer = SmtpMailer(host="127.0.0.1", port=smtp_peer.port, sender=SENDER)

    with pytest.raises(TransientMailError, match="was sent, but") as caught:
        mailer.send(outgoing)

    assert "refused@example.nl" in str(caught.value)
    [envelope] = smtp_peer.recorder.envelopes
    assert envelope.rcpt_tos == ["mieke@example.nl"]
    assert parse(envelope.content)["Message-ID"] in str(caught.value)


def test_smtp_closed_port_is_transient() -> None:
    port = free_port()  # nothing listens here any more
    mailer = SmtpMailer(host="127.0.0.1", port=port, sender=SENDER, timeout=2.0)

    with pytest.raises(TransientMailError, match=f"127.0.0.1:{port}"):
        mailer.send(approval_email())


def test_smtp_needs_both_username_and_password() -> None:
    with pytest.raises(ValueError, match="both"):
        SmtpMailer(host="127.0.0.1", port=25, sender=SENDER, username="offboarding")
    with pytest.raises(ValueError, match="both"):
        SmtpMailer(host="127.0.0.1", port=25, sender=SENDER, password=SecretStr(PASSWORD))


def test_smtp_repr_hides_the_password() -> None:
    mailer = SmtpMailer(
        host="smtp.example.nl",
        port=587,
        sender=SENDER,
        starttls=True,
        username="offboarding",
        password=SecretStr(PASSWORD),
    )
    assert PASSWORD not in repr(mailer)
    assert PASSWORD not in str(vars(mailer))


# --- build_message ------------------------------------------------------------------------


def test_build_message_rejects_what_cannot_be_sent() -> None:
    good = OutgoingEmail(to=["a@example.nl"], subject="Hallo", text="t", html="<p>h</p>")
    with pytest.raises(ValueError, match="not an email address"):
        build_message(good, "offboarding")
    with pytest.raises(ValueError, match="recipient"):
        build_message(OutgoingEmail(to=[], subject="x", text="t", html="h"), SENDER)
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        build_message(
            OutgoingEmail(
                to=["a@example.nl\r\nBcc: b@evil.example"], subject="x", text="t", html="h"
            ),
            SENDER,
        )


@pytest.mark.parametrize(
    "subject",
    [
        "x\nBcc: b@evil.example",
        "x\r\nBcc: b@evil.example",
        "x\rBcc: b@evil.example",
        "x\u2028Bcc: b@evil.example",
        "\u202ex\u200b Bcc: b@evil.example\n",
    ],
)
def test_build_message_keeps_the_subject_one_visible_line(subject: str) -> None:
    outgoing = OutgoingEmail(to=["a@example.nl"], subject=subject, text="t", html="<p>h</p>")
    raw = build_message(outgoing, SENDER).as_bytes()

    received = parse(raw)
    assert received["Subject"] == "x Bcc: b@evil.example"
    assert received["Bcc"] is None
    assert not [line for line in raw.splitlines() if line.lower().startswith(b"bcc")]


def test_build_message_encodes_dutch_subject() -> None:
    outgoing = OutgoingEmail(
        to=["a@example.nl", "b@example.nl"],
        subject="Goedkeuring gevraagd: toegang van Zoë Ëmans intrekken (café)",
        text="Één regel",
        html="<p>Één regel</p>",
    )
    raw = build_message(outgoing, SENDER).as_bytes()

    raw.decode("ascii")
    assert b"=?utf-8?" in raw
    assert parse(raw)["Subject"] == outgoing.subject
    assert parse(raw)["To"] == "a@example.nl, b@example.nl"


def test_smtp_delivers_a_spoofing_name_as_plain_visible_text(smtp_peer: Server) -> None:
    outgoing = approval_email(
        leaver_name="Jan \u202eseirf.exe", approver_name="[x](http://evil) **boss**\u2066"
    )
    mailer = SmtpMailer(host="127.0.0.1", port=smtp_peer.port, sender=SENDER)

    mailer.send(outgoing)

    [envelope] = smtp_peer.recorder.envelopes
    assert envelope.rcpt_tos == ["jeroen.bakker@example.nl"]
    received = parse(envelope.content)
    plain, html = (part.get_content() for part in received.iter_parts())
    subject = str(received["Subject"])
    assert subject == "SPOED \u2013 Goedkeuring gevraagd: toegang van Jan seirf.exe intrekken"
    for shown in (subject, plain, html):
        assert not set(shown) & (BIDI_CONTROLS | ZERO_WIDTH)
    assert "Jan seirf.exe" in plain and "Jan seirf.exe" in html
    assert "[x](http://evil) **boss**," in plain
    assert html_links(html) == [LINK]


# --- OutboxMailer -------------------------------------------------------------------------


def test_outbox_writes_parseable_eml_files(tmp_path: Path) -> None:
    outbox = tmp_path / "var" / "outbox"
    mailer = OutboxMailer(outbox, SENDER)
    outgoing = approval_email()

    first = mailer.send(outgoing)
    second = mailer.send(outgoing)

    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    files = sorted(outbox.iterdir())
    assert [path.suffix for path in files] == [".eml", ".eml"]
    assert all(re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}\.eml", p.name) for p in files)
    messages = [parse(path.read_bytes()) for path in files]
    assert [message["Message-ID"] for message in messages] == [first, second]
    received = messages[0]
    assert received["Subject"] == outgoing.subject
    assert received["From"] == SENDER
    body = received.get_body(("plain",))
    assert body is not None
    assert text_links(body.get_content()) == [LINK]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_outbox_leaves_no_partial_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailer = OutboxMailer(tmp_path, SENDER)

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("offboarding.notification.mail.os.fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        mailer.send(approval_email())
    assert list(tmp_path.iterdir()) == []
