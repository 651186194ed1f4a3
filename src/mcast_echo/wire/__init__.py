"""Byte formats shared by the daemon and the client: pure encode/decode, no sockets."""
