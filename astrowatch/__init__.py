"""astrowatch: a drop-folder daemon that turns natal charts and photos into reviewed images."""

__version__ = "0.1.0"
