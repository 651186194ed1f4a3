"""The client: `mcast-echo ping` -- its options, the probe loop and the report."""
