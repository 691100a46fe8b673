"""Cases, revocation plans, revocation and its evidence, the audit log, retention.

Plain Python over the database: no Prefect, no web framework, no SMTP.
"""
