"""Project-wide error types, so the CLI can show bad input as one clear line instead of a traceback."""


class AEDistillError(Exception):
    """Base class for errors that are the user's input, not a bug."""


class DataError(AEDistillError):
    """A dataset file or record is missing, corrupt, or not what was expected."""


class TrainingDiverged(AEDistillError, FloatingPointError):
    """The loss or the weights became NaN/inf; nothing broken is written."""


class CheckpointError(AEDistillError):
    """A checkpoint does not fit the model it is loaded into."""
