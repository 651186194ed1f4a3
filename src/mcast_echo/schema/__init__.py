"""What a configuration holds: the settings objects and the check of each key, by concern.

values.py: Invalid and the checks of plain values; policy.py: allow and rate_limit;
listener.py: a listener and its keys; endpoints.py: metrics and ssmping; keys.py: which
key runs which check, and Config. config.py reads the file; nothing here touches a file
or the network. The names below are the public face; modules of the package import
from the concern's own module.
"""

from .endpoints import MAX_SSMPING_GROUPS, Metrics, Ssmping
from .keys import ALL_KEYS, DAEMON_KEYS, LISTENER_KEYS, LISTENERS, MAX_LISTENERS, Config, check_key
from .listener import ALL_INTERFACES, Listener, check_interface, listener_problems
from .policy import RateLimit, check_allow
from .values import Invalid, Quoted, parse_size, show, spell

__all__ = ["ALL_INTERFACES", "ALL_KEYS", "DAEMON_KEYS", "LISTENERS", "LISTENER_KEYS",
           "MAX_LISTENERS", "MAX_SSMPING_GROUPS", "Config", "Invalid", "Listener", "Metrics",
           "Quoted", "RateLimit", "Ssmping", "check_allow", "check_interface", "check_key",
           "listener_problems", "parse_size", "show", "spell"]
