"""The kernel side: multicast sockets and memberships, interfaces, limits, batched I/O."""
