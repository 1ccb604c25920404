"""herald: the Faust app, settings, topics, web views, CLI and the PostgreSQL store."""
