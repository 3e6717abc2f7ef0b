"""Several daemons of one cluster: leader election, presence, the pause switch."""
