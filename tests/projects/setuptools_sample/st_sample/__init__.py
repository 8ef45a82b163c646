"""Sample package built with setuptools: every module in it, subpackages included, is compiled."""
