"""Strategy RefreshableView: a refreshable materialized view the server runs, owned by a TableRefresh.

``definition`` (pure) renders the view and what changes it, ``refreshes`` (pure) reads
``system.view_refreshes`` as runs.
"""
