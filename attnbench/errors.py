"""User-facing errors: printed as one clear message (no traceback), exit code 2."""


class ConfigError(ValueError):
    """A configuration value or an input (path, size, option) that cannot work.

    The message names the offending value and what was expected.
    """
