"""Conflicts, participants, votes, strategies and escalation (to come)."""
