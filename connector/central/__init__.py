"""The central receiver: accepts partners' releases over HTTPS, re-checks them, merges them.

`htcds-connector central serve` runs `app.create_app` under uvicorn; `central add-partner` makes a
partner and prints its token once. See `deploy/central/README.md` for TLS behind a reverse proxy.
"""
