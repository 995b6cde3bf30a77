"""tradeops reference application (standard library only)."""

from refapp._build import FAULT, VERSION

__version__ = VERSION
__all__ = ["FAULT", "VERSION", "__version__"]
