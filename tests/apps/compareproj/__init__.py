"""The project ``bivio compare`` is tested on: a sync view, an async view, a sync-only
middleware and a Channels consumer; environment variables break it on purpose."""
