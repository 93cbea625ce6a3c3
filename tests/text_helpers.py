"""Reading what a command printed, for the checks that no patient's value is in it."""

from __future__ import annotations

import re

# An absolute path as the commands print them: from a "/" not inside a word or a date
# ("01/02/2020" keeps its slashes) up to a space, a colon, a quote, a comma or a bracket.
_PATH = re.compile(r"(?<![\w./-])/[^\s:'\",()]+")


def without_paths(text: str) -> str:
    """``text`` with each absolute path written ``<path>``.

    A refusal names the file it read, and a test's files live under pytest's numbered folders
    (``pytest-159/test_a_bad_csv_extract_names_f11``), so a patient's value of "9" or "150"
    is found in the folder's name, not in what the command said of the patient. The check
    that no value is printed is made on the rest."""
    return _PATH.sub("<path>", text)
