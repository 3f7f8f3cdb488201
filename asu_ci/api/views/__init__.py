"""The endpoint's views, one module per kind of page: ``build`` (request, poll,
revision), ``static`` (overview, the rendered tree, store files), ``stats``
(figures and metrics) and ``docs`` (the API documentation)."""
