"""User-facing errors: the CLI prints them as one line and exits with status 2."""


class SgdlabError(Exception):
    """Bad input from the user (config, data file, run id); a one-line message naming it."""


class ConfigError(SgdlabError):
    """Invalid configuration value or key; the message names the dotted field."""


class DataError(SgdlabError):
    """A data file or folder is missing, corrupted or in the wrong format; names the file."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" if it has none), to quote it in one."""
    return (str(exc).splitlines() or [""])[0]
