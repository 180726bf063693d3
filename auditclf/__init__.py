"""auditclf: audit an image classifier before it ships."""

__version__ = "0.1.0"
