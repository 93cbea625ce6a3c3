"""The information-governance (IG) pack: what a practice's IG officer and the network's data
protection officer read before signing off, generated from the signed catalogue and the network's
settings, never written by hand (so it cannot drift from what the software does).

Documents (each as HTML, one printable page, no script, and as Markdown): the data items that
leave a practice, the data-flow diagram, the DPIA annex, the list of processing, and an index that
says what changed since the previous catalogue version. Every page names the catalogue id,
version and SHA-256 it was made from.
"""

from __future__ import annotations

from .build import DOCUMENTS, IgPack, build_pack, write_pack

__all__ = ["DOCUMENTS", "IgPack", "build_pack", "write_pack"]
