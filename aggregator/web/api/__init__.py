"""The JSON API's routers, one module per domain room (``/v1/...``). Each is a thin layer over
its room's service: it parses the request, checks the caller's role (:mod:`..deps`) and hands
the work to the domain, which never imports from :mod:`aggregator.web`."""
