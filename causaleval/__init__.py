"""causaleval: does localisation inform editing? (see ../shared/SPEC.md and README.md)."""

__version__ = "0.1.0"
