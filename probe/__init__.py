"""probe: measure blocking and throttling of internet services, with controls and verdicts."""

__version__ = "0.1.0"
