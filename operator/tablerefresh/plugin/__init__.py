"""``kubectl tablerefresh``: the kubectl plugin (the ``kubectl-tablerefresh`` command).

``main`` (arguments, output), ``cluster`` (the API calls, with the user's kubeconfig), ``summary``
(a TableRefresh -> is it healthy, and if not why), ``history`` (its Jobs -> their outcomes), ``words``
(times and numbers for people). Only ``main`` and ``cluster`` talk to the API.
"""
