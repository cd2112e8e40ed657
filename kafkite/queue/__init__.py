"""OCI Queue mode: queues with visibility timeouts, redelivery and dead letters, over the broker's own logs.

``service`` owns every queue of one broker (its catalogue and message state); ``rest`` serves the OCI Queue
REST API on the shared REST listener and ``stomp`` a STOMP 1.2 listener over the same queues.
"""
