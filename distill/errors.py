"""The domain error of `distill`: a recipe, stage, prompt file or evaluation that cannot run.

Raised with a one-line message meant for the user (`framecast` prints it as
`framecast: error: MESSAGE`, exit code 2, no traceback).
"""


class DistillError(Exception):
    """A recipe, stage, prompt file or evaluation setting that cannot be used."""
