"""`python -m offboarding.cli`."""

from offboarding.cli import app

app()
