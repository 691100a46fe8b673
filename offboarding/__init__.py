"""The shared core of the offboarding service, in layers (checked by `lint-imports`):

- `domain`: cases, plans, revocation, the audit log, retention (no Prefect, web or SMTP);
- `intake`: the HRIS contract, its signature and the intake route;
- `notification`: mail (SMTP or outbox) and rendering of emails, pages and reports;
- `orchestration`: the Prefect side: starting, resuming and recovering runs, the runner;
- `wiring`: settings, database, logging, the web app and the service that runs it all;
- `cli`: the `offboarding` command.
"""
