"""The store's one exception type."""

from sgdlab.errors import SgdlabError


class StoreError(SgdlabError):
    """A run, file or index entry is missing, ambiguous or unreadable; one line naming it."""
