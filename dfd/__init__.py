"""dfd: tells whether a face image or video is real or AI-generated."""

__version__ = "0.1.0"
