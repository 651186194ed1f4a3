"""UDP's payload limits: the largest datagram each IP version carries, which every
format here, and the config's ``max_datagram``, stays within."""

MAX_UDP_PAYLOAD = 65507  # 65535 - 20 (IPv4 header) - 8 (UDP header)
MAX_UDP6_PAYLOAD = 65527  # 65535 - 8 (UDP header): IPv6's payload length excludes its header
