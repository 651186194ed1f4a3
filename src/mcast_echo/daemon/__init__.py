"""The long-running side: the loop, the responders and their echo paths, the policy,
systemd glue, logging and detaching."""
