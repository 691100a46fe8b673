"""`offboarding`: run the service or the demo, dry-run a plan, list cases, check the audit log.

A failure a person can fix ends in one or a few plain lines on stderr that name the file,
setting, host or case and say what to do, with a non-zero exit: never a traceback, never a
secret. Settings problems are all reported at once (`_configuration_problems`); the other
known failures (a connector, the database, a web address, the mail server) become such
lines in one place, `_Commands.invoke`.
"""

import importlib

from offboarding.cli.app import app

# registered in the order --help shows
for _commands in ("service", "worker", "plans", "records", "hris", "evidence", "workinstruction"):
    importlib.import_module(f"offboarding.cli.{_commands}")
importlib.import_module("offboarding.cli.reconcile")  # the watch after the case: orphans
importlib.import_module("offboarding.cli.deputies")  # a manager's deputy for a period

__all__ = ["app"]
