"""The path out of the practice: what leaves, how it is kept, sent and proved.

release.py      disclosure control, the Submission, its DSSE signature
suppression.py  why a released count is suppressed (the practice's own screens; never sent)
outbox.py       the durable, append-only outbox: every signed message, before it is sent
submitter.py    a period: compute, release, sign, store, then send; resend what is queued
transport.py    the HTTP client for the aggregator (TLS verified, retries resend stored bytes)
audit.py        receipts, checkpoints, inclusion and consistency proofs checked
enrolment.py    joining the network (``enrol``) and replacing the key (``rotate-key``)
"""
