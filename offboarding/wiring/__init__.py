"""Putting it together: settings, database, logging, the web app, the running service."""
