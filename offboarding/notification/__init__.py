"""People are told: mail (SMTP or an outbox) and the rendering of emails, pages, reports."""
