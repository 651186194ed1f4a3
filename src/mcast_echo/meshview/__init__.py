"""`mcast-echo mesh`: who hears whom, from the daemons' mesh counters (docs/mesh.md)."""
