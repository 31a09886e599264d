"""User-facing errors: each names the offending input and says what to do."""


class CausalEvalError(Exception):
    """Base class of the errors the command line reports without a traceback."""


class ModelNotFoundError(CausalEvalError):
    """A model path or the embedded model wheel is missing."""


class UnsupportedArchitectureError(CausalEvalError):
    """The model family has no site map."""


class DataError(CausalEvalError):
    """A fact file or record is missing, malformed or inconsistent."""


class SiteError(CausalEvalError):
    """A site, layer, window or token position is out of range or cannot be located."""


class ConfigError(CausalEvalError):
    """A command-line argument or configuration setting is unknown or has a bad value."""


class ModelFileError(CausalEvalError):
    """A model folder lacks weights, holds corrupt ones, or only pickled weights (refused)."""


class ResultsError(CausalEvalError):
    """A results folder or a file in it cannot be used (an existing file, a corrupt file)."""
