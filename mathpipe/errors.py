"""Errors that describe a problem with the user's input rather than a bug.

Stages catch `PipelineError` at the top level (see `mathpipe.cli.run_stage`) and print its message
alone, without a traceback: the message must name the file, column, line or parameter at fault.
"""


class PipelineError(Exception):
    """Bad input: a missing file, a wrong schema, an empty dataset, a bad parameter, an unknown model."""


class ConfigError(PipelineError):
    """A parameter in params.yaml (or on the command line) is unknown, ill-typed or out of range."""


class DataError(PipelineError):
    """An input file is missing, malformed, or lacks a required column."""
