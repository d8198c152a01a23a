"""Deciding: the deploy rule, the shortlist of candidate students, and the reports people read."""
