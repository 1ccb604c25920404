"""Local servers that speak a provider's wire API and record what they received.

========================  ====================================  ===========================
module                    speaks                                run standalone
========================  ====================================  ===========================
:mod:`.sendgrid`          SendGrid v3 ``POST /v3/mail/send``    ``python -m testing.fakes.sendgrid --port N``
:mod:`.twilio`            Twilio 2010-04-01 Messages            ``python -m testing.fakes.twilio --port N``
:mod:`.smtp`              SMTP (aiosmtpd), optional STARTTLS    ``python -m testing.fakes.smtp --port N``
========================  ====================================  ===========================

Each fake owns a :class:`~testing.fakes.scripted.Script` that scripts failures
(5xx, 429, slowness, rejected addresses) and records accepted messages.
They only ever bind 127.0.0.1.
"""
