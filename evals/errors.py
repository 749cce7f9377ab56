"""The harness's error for bad input from a spec or the command line: a leaf every layer may raise."""


class SpecError(ValueError):
    """A spec (or an override of it) is malformed; the message names the file and the field."""
