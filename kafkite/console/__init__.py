"""The web console served by the broker when ``console.listener`` is set (see ``kafkite.console.server``)."""
