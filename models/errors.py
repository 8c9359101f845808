"""The domain error of `models`: a model that cannot be found or loaded, or a request it cannot serve.

Raised with a one-line message meant for the user (`framecast` prints it as
`framecast: error: MESSAGE`, exit code 2, no traceback).
"""


class ModelError(Exception):
    """A model cannot be found, loaded, or asked for this (bad prompt, length, image, device)."""
