"""The sequence window ping matches echoes over: wire/seqwindow.py's, SEQ_WINDOW probes back."""

from ..wire.seqwindow import SEQ_WINDOW, SeqWindow

__all__ = ["SEQ_WINDOW", "SeqWindow"]
