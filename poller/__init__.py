"""hwpoller: polls server BMCs and facility devices and exports normalised Prometheus metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hwpoller")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
