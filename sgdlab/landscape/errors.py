"""Errors of the landscape layer: bad input in one line naming the argument."""

from sgdlab.errors import SgdlabError


class LandscapeError(SgdlabError, ValueError):
    """A point, direction or dataset that does not fit the model (wrong size, unknown or
    missing parameter, mismatched architectures). Also a ValueError, so library users who
    catch ValueError need not know it; the CLI prints it as one line and exits 2."""
