"""Sending email: over SMTP in production, into an outbox folder for development.

Every mailer builds the same MIME message (``build_message``) and returns its
Message-ID. SMTP failures come out as ``TransientMailError`` (4xx replies,
connection trouble: try again later) or ``PermanentMailError`` (5xx replies,
refused login, untrusted certificate: fix the configuration or address first).
"""

from __future__ import annotations

import os
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol

import structlog
from pydantic import SecretStr

from offboarding.domain.text import safe_display

log = structlog.get_logger(__name__)


class MailError(Exception):
    """The message could not be sent."""

    def __init__(self, message: str, *, smtp_code: int | None = None) -> None:
        super().__init__(message)
        self.smtp_code = smtp_code


class TransientMailError(MailError):
    """A temporary failure (4xx reply, connection trouble): sending again later may work."""


class PermanentMailError(MailError):
    """A lasting failure (5xx reply, bad credentials, untrusted server): retrying will not help."""


@dataclass(frozen=True)
class OutgoingEmail:
    to: list[str]
    subject: str
    text: str
    html: str
    reply_to: str | None = None


class Mailer(Protocol):
    def send(self, email: OutgoingEmail) -> str:
        """Send ``email`` and return its Message-ID."""
        ...


def _sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    local, at, domain = address.rpartition("@")
    if not (local and at and domain):
        raise ValueError(
            f"sender {sender!r} is not an email address; "
            "use e.g. 'Offboarding <offboarding@example.nl>'"
        )
    return domain


def build_message(email: OutgoingEmail, sender: str) -> EmailMessage:
    """A multipart/alternative message (plain text first, then HTML), UTF-8 throughout.

    The subject is put on one line without invisible controls (``safe_display``): it
    carries names, and no line break may start a header of its own.
    """
    if not email.to:
        raise ValueError("an email needs at least one recipient")
    message = EmailMessage()
    message["Subject"] = safe_display(email.subject).strip()
    message["From"] = sender
    message["To"] = ", ".join(email.to)
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=_sender_domain(sender))
    # Quoted-printable keeps the body 7-bit clean for any relay while Dutch text stays readable.
    message.set_content(email.text, charset="utf-8", cte="quoted-printable")
    message.add_alternative(email.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


def _recipients(email: OutgoingEmail) -> list[str]:
    addresses = [address for _, address in getaddresses(email.to)]
    for address in addresses:
        if "@" not in address:
            raise ValueError(f"recipient {address!r} is not an email address")
    return addresses


def _close_quietly(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        # The server has already taken or refused the message; a failed goodbye changes neither.
        smtp.close()


class SmtpMailer:
    """Sends through an SMTP server, optionally upgrading to TLS with STARTTLS and logging in."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        starttls: bool = False,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both an SMTP username and password, or neither")
        _sender_domain(sender)
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.username = username
        self._password = password
        self.timeout = timeout
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return (
            f"SmtpMailer(host={self.host!r}, port={self.port}, sender={self.sender!r}, "
            f"starttls={self.starttls}, username={self.username!r})"
        )

    @property
    def _where(self) -> str:
        return f"SMTP server {self.host}:{self.port}"

    def _redact(self, text: str) -> str:
        if self._password is not None and self._password.get_secret_value():
            text = text.replace(self._password.get_secret_value(), "**********")
        return text

    def send(self, email: OutgoingEmail) -> str:
        message = build_message(email, self.sender)
        message_id = str(message["Message-ID"])
        recipients = _recipients(email)
        try:
            refused = self._deliver(message, recipients)
        except smtplib.SMTPRecipientsRefused as error:
            raise self._refused_error(error.recipients, delivered=False) from None
        except smtplib.SMTPAuthenticationError as error:
            raise PermanentMailError(
                f"{self._where} refused the login for user {self.username!r} "
                f"(code {error.smtp_code}); check the SMTP username and password",
                smtp_code=error.smtp_code,
            ) from None
        except smtplib.SMTPResponseException as error:
            raise self._reply_error(error) from None
        except smtplib.SMTPNotSupportedError as error:
            raise PermanentMailError(
                f"{self._where} does not support what was asked ({self._redact(str(error))}); "
                "check the STARTTLS and login settings"
            ) from None
        except smtplib.SMTPServerDisconnected as error:
            raise TransientMailError(
                f"{self._where} closed the connection ({self._redact(str(error))}); "
                "the message was not sent, try again later"
            ) from None
        except smtplib.SMTPException as error:
            raise PermanentMailError(
                f"sending through {self._where} failed: {self._redact(str(error))}"
            ) from None
        except ssl.SSLCertVerificationError as error:
            raise PermanentMailError(
                f"the TLS certificate of {self._where} is not trusted ({error.verify_message}); "
                "check the host name, or configure the CA that signed the server's certificate"
            ) from None
        except OSError as error:
            reason = self._redact(str(error)) or type(error).__name__
            raise TransientMailError(
                f"could not reach {self._where} ({reason}); "
                "check the host and port and that the server is up; the message was not sent"
            ) from None
        if refused:
            raise self._refused_error(refused, delivered=True, message_id=message_id)
        log.info("mail.sent", message_id=message_id, recipients=len(recipients))
        return message_id

    def _deliver(
        self, message: EmailMessage, recipients: list[str]
    ) -> dict[str, tuple[int, bytes]]:
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.starttls:
                context = self._ssl_context or ssl.create_default_context()
                smtp.starttls(context=context)
            if self.username is not None and self._password is not None:
                smtp.login(self.username, self._password.get_secret_value())
            return smtp.send_message(
                message, from_addr=parseaddr(self.sender)[1], to_addrs=recipients
            )
        finally:
            _close_quietly(smtp)

    def _reply_error(self, error: smtplib.SMTPResponseException) -> MailError:
        reply = error.smtp_error
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        detail = f"{self._where} answered {error.smtp_code} {self._redact(text)}"
        if 400 <= error.smtp_code < 500:
            return TransientMailError(
                f"{detail}; the message was not sent, try again later", smtp_code=error.smtp_code
            )
        return PermanentMailError(
            f"{detail}; the message was not sent, check the sender, recipients and server settings",
            smtp_code=error.smtp_code,
        )

    def _refused_error(
        self,
        refused: dict[str, tuple[int, bytes]],
        *,
        delivered: bool,
        message_id: str | None = None,
    ) -> MailError:
        codes = [code for code, _ in refused.values()]
        listing = ", ".join(
            f"{address} ({code} {reply.decode('utf-8', 'replace')})"
            for address, (code, reply) in refused.items()
        )
        if delivered:
            prefix = f"message {message_id} was sent, but {self._where} refused some recipients: "
        else:
            prefix = f"{self._where} refused every recipient, so nothing was sent: "
        if all(400 <= code < 500 for code in codes):
            return TransientMailError(
                prefix + listing + "; try these recipients again later", smtp_code=max(codes)
            )
        return PermanentMailError(
            prefix + listing + "; check these addresses", smtp_code=max(codes)
        )


class OutboxMailer:
    """Writes every message as an ``.eml`` file into a folder instead of sending it."""

    def __init__(self, directory: Path, sender: str) -> None:
        _sender_domain(sender)
        self.directory = directory
        self.sender = sender
        # The messages carry personal approval links: only the service's own user may read them.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def send(self, email: OutgoingEmail) -> str:
        message = build_message(email, self.sender)
        message_id = str(message["Message-ID"])
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        final = self.directory / name
        partial = self.directory / f".{name}.tmp"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(message.as_bytes())
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        log.info("mail.written", message_id=message_id, path=str(final))
        return message_id
