"""The operator's web dashboard: server-rendered pages, live updates over server-sent events,
Prometheus ``/metrics``; served by the node (``eschaton.daemon.dashboard``)."""
