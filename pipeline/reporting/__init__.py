"""Reporting: the console, metrics and where a process spends its time."""
