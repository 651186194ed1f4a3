"""mcast-echo: a multicast echo responder and a group ping client."""

__version__ = "0.1.0"
