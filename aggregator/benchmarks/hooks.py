"""The entry point the ingest transaction calls (found by
``aggregator.common.submission_batch_hook``)."""

from __future__ import annotations

from .service import on_submission_stored, on_submissions_stored

__all__ = ["on_submission_stored", "on_submissions_stored"]
