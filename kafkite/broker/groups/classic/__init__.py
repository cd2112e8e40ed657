"""The classic rebalance protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup) and its groups."""
