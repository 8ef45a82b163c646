"""Sample package built with hatchling: ``flows`` is compiled in the wheel, ``helpers`` is not."""
