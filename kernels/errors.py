"""The domain error of `kernels`: an attention backend or kernel setting that cannot be used here.

Raised with a one-line message meant for the user (`framecast` prints it as
`framecast: error: MESSAGE`, exit code 2, no traceback).
"""


class KernelError(Exception):
    """An attention backend, device or kernel shape that this machine or call cannot use."""
