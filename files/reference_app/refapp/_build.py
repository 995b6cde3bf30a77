"""Build-time constants. scripts/build_refapp.py rewrites this file in the copy it builds."""

VERSION = "0.0.0.dev0"
FAULT = None
