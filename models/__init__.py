"""Persistence and configuration: settings, tables, database access and the job/ledger rules."""
