"""Practices, their agents' keys and enrolment (tokens, enrol, rotate, revoke)."""
